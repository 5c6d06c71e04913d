"""Fine-tune a local model on a recorded JSONL file: the notebook's `GradientFinetuneEngine`.

`finetune()` trains a LoRA adapter with structune's trainer; a second call continues from
the adapter the first produced, as the notebook's two "epochs" do. structune adapters are
immutable, so each call writes a new adapter whose manifest names its parent, and
`model_adapter_id` always names the newest. `get_finetuned_model()` returns a
`StructuneLLM` with that adapter merged in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from structune.errors import UserError
from structune.integrations.llama_index.llm import StructuneLLM
from structune.messages import Message
from structune.models.loading import DEFAULT_BASE_MODEL
from structune.train.config import TrainConfig

log = logging.getLogger(__name__)

MIN_EXAMPLES = 10  # the notebook's own note: "we need >= 10 movies"


class StructuneFinetuneEngine:
    """Trains LoRA adapters on an OpenAI chat JSONL file.

    Args:
        data_path: the JSONL file, e.g. what `StructuneFinetuningHandler` saved.
        base_model: the base model spec; ignored when continuing `model_adapter_id`.
        name: names the adapters (`<name>-<random>`).
        max_steps: optimizer steps per `finetune()` call; default: 3 epochs of the data.
        batch_size: examples per step.
        learning_rate: peak learning rate; default: `TrainConfig`'s.
        rank: LoRA rank; default: `TrainConfig`'s.
        model_adapter_id: an existing adapter to continue training.
        verbose: show a progress bar with the running loss.
    """

    def __init__(
        self,
        *,
        data_path: str | Path,
        base_model: str = DEFAULT_BASE_MODEL,
        name: str = "llama-index",
        max_steps: int | None = None,
        batch_size: int = 1,
        learning_rate: float | None = None,
        rank: int | None = None,
        model_adapter_id: str | None = None,
        verbose: bool = True,
    ) -> None:
        overrides: dict[str, Any] = {"max_steps": max_steps, "batch_size": batch_size}
        if learning_rate is not None:
            overrides["learning_rate"] = learning_rate
        if rank is not None:
            overrides["lora_r"], overrides["lora_alpha"] = rank, 2 * rank
        self.config = TrainConfig(**overrides)
        self.config.validate()
        if model_adapter_id is not None:
            from structune.adapters import load_manifest

            base_model = load_manifest(model_adapter_id).base_model  # refuses unknown ids
        self.data_path = Path(data_path)
        self.base_model = base_model
        self.name = name
        self.verbose = verbose
        self._adapter_id = model_adapter_id
        self._conversations()  # refuse a missing, malformed or too small file now, not later

    @property
    def model_adapter_id(self) -> str | None:
        """The newest adapter: None until the first `finetune()` of a fresh engine."""
        return self._adapter_id

    def finetune(self) -> None:
        """Train on `data_path`, continuing the newest adapter if there is one."""
        from structune.train.lora import finetune

        manifest = finetune(
            self._conversations(),
            base=self.base_model,
            config=self.config,
            parent=self._adapter_id,
            name=self.name,  # the examples' program is unknown here: no task recorded
            progress=self.verbose,
        )
        log.info("adapter %s: final loss %.4f", manifest.id, manifest.loss_history[-1])
        self._adapter_id = manifest.id

    def get_finetuned_model(self, **kwargs: Any) -> StructuneLLM:
        """The tuned model as a LlamaIndex LLM; `kwargs` go to `StructuneLLM`
        (`max_tokens`, `is_chat_model`, `constrained`, ...)."""
        if self._adapter_id is None:
            raise UserError(
                "there is no fine-tuned model yet: call finetune() first "
                "(or pass model_adapter_id= to continue an existing adapter)"
            )
        return StructuneLLM(model=self.base_model, adapter=self._adapter_id, **kwargs)

    def _conversations(self) -> list[list[Message]]:
        from structune.train.sources import conversations_from_jsonl

        if not self.data_path.is_file():
            raise UserError(
                f"data_path {self.data_path} does not exist; write it first, e.g. with "
                "StructuneFinetuningHandler.save_finetuning_events(path)"
            )
        conversations = conversations_from_jsonl(self.data_path)
        if len(conversations) < MIN_EXAMPLES:
            raise UserError(
                f"{self.data_path} holds {len(conversations)} usable examples (answers that "
                f"contain a JSON object); fine-tuning needs at least {MIN_EXAMPLES}: "
                "record more calls through the handler"
            )
        return conversations
