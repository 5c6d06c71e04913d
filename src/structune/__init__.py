"""structune: teach a small local language model to answer in your schema.

record a teacher's structured answers → LoRA fine-tune a small base model → compare
base vs tuned vs teacher. The public API is re-exported here lazily, so that
`import structune` stays fast and never imports torch. (`record` is not among them: the
name belongs to the `structune.record` package; use `from structune.record import record`.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Program": "structune.program",
    "Distinct": "structune.constrain.distinct",
    "StructuneError": "structune.errors",
    "UserError": "structune.errors",
    "BackendError": "structune.errors",
    "InvalidOutput": "structune.errors",
    "LLM": "structune.llms.base",
    "Completion": "structune.messages",
    "CallableLLM": "structune.llms.callable",
    "OpenAICompatibleLLM": "structune.llms.openai_compat",
    "LocalLLM": "structune.llms.local",
    "Sampling": "structune.llms.sampling",
    "DatasetStore": "structune.record.store",
    "export_jsonl": "structune.record.jsonl",
    "import_jsonl": "structune.record.jsonl",
    "TrainConfig": "structune.train.config",
    "finetune": "structune.train.lora",
    "list_adapters": "structune.adapters",
    "compare": "structune.evaluate.compare",
}

__all__ = [
    "LLM",
    "BackendError",
    "CallableLLM",
    "Completion",
    "DatasetStore",
    "Distinct",
    "InvalidOutput",
    "LocalLLM",
    "OpenAICompatibleLLM",
    "Program",
    "Sampling",
    "StructuneError",
    "TrainConfig",
    "UserError",
    "compare",
    "export_jsonl",
    "finetune",
    "import_jsonl",
    "list_adapters",
]

if TYPE_CHECKING:
    from structune.adapters import list_adapters
    from structune.constrain.distinct import Distinct
    from structune.errors import BackendError, InvalidOutput, StructuneError, UserError
    from structune.evaluate.compare import compare
    from structune.llms.base import LLM
    from structune.llms.callable import CallableLLM
    from structune.llms.local import LocalLLM
    from structune.llms.openai_compat import OpenAICompatibleLLM
    from structune.llms.sampling import Sampling
    from structune.messages import Completion
    from structune.program import Program
    from structune.record.jsonl import export_jsonl, import_jsonl
    from structune.record.store import DatasetStore
    from structune.train.config import TrainConfig
    from structune.train.lora import finetune


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'structune' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
