"""Fine-tuning: LoRA SFT on recorded conversations (`lora`), its settings (`config`) and the
training data pipeline (`data`, `sources`). The adapters it writes live in
`structune.adapters`, which inference reads without importing the trainer.

Nothing is re-exported here, so that reading `TrainConfig` for the CLI's flags imports
neither torch nor pydantic; the public names are on the `structune` package.
"""
