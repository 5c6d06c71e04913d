"""Fine-tuning: LoRA SFT on recorded conversations (`lora`), its settings (`config`), the
training data pipeline (`data`, `sources`) and adapters addressed by id (`adapters`).

Nothing is re-exported here, so that reading `TrainConfig` for the CLI's flags imports
neither torch nor pydantic; the public names are on the `structune` package.
"""
