"""Fine-tuning: LoRA SFT on recorded conversations, and adapters addressed by id."""

from structune.train.adapters import AdapterManifest, list_adapters, load_manifest
from structune.train.lora import TrainConfig, finetune

__all__ = ["AdapterManifest", "TrainConfig", "finetune", "list_adapters", "load_manifest"]
