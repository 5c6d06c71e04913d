"""The training configuration: the CLI's flags and the record saved in each adapter manifest."""

from __future__ import annotations

import math
from dataclasses import dataclass

from structune.errors import UserError


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in the adapter manifest.

    `max_steps`, when set, wins over `epochs`. Every `checkpoint_every` steps (0: never)
    the run saves a checkpoint that `finetune(..., resume=True)` continues from. Before each
    step the gradients' global norm is clipped to `max_grad_norm` (None: never), as
    transformers' `Trainer` does by default. `gradient_checkpointing` keeps only each
    decoder layer's input for the backward pass and recomputes the rest there: less memory
    for more time (`benchmarks/train_memory.py`), the same weights, so a run stopped for
    want of memory resumes with it on. `group_by_length` batches examples of similar length
    together: less padding, faster steps, a higher loss on small datasets (see
    `structune.train.data.training_batches`). `unlikelihood` > 0 adds that weight of
    Welleck et al.'s token-level unlikelihood loss, which penalises repeating the answer's
    earlier words (`structune.train.lora.repetition_unlikelihood`).
    """

    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 4
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    max_length: int = 1024
    seed: int = 0
    bf16: bool | None = None  # None: bf16 autocast where the hardware computes bf16 natively
    checkpoint_every: int = 50
    gradient_checkpointing: bool = False
    group_by_length: bool = False
    unlikelihood: float = 0.0

    def total_steps(self, n_examples: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_examples / self.batch_size))

    def validate(self) -> None:
        problems = [
            f"{name} must be a positive number, got {value}"
            for name, value in [
                ("epochs", self.epochs),
                ("batch_size", self.batch_size),
                ("learning_rate", self.learning_rate),
                ("lora_r", self.lora_r),
                ("max_length", self.max_length),
            ]
            if not (value > 0 and math.isfinite(value))  # NaN compares false to everything
        ]
        if self.max_steps is not None and self.max_steps <= 0:
            problems.append(f"max_steps must be positive, got {self.max_steps}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not (self.unlikelihood >= 0 and math.isfinite(self.unlikelihood)):
            problems.append(f"unlikelihood must be 0 (off) or positive, got {self.unlikelihood}")
        if self.checkpoint_every < 0:
            problems.append(
                f"checkpoint_every must be 0 (off) or positive, got {self.checkpoint_every}"
            )
        if problems:
            raise UserError("invalid training config: " + "; ".join(problems))
