"""structune inside LlamaIndex: what the seed notebook's Gradient classes did, run locally.

| the notebook's class            | structune's                   |
|---------------------------------|-------------------------------|
| `GradientBaseModelLLM`          | `StructuneLLM(model=...)`     |
| `GradientModelAdapterLLM`       | `StructuneLLM(adapter=...)`   |
| `GradientAIFineTuningHandler`   | `StructuneFinetuningHandler`  |
| `GradientFinetuneEngine`        | `StructuneFinetuneEngine`     |

Needs the `llama-index` extra: `pip install 'structune[llama-index]'`.
"""

from structune.integrations.llama_index.engine import StructuneFinetuneEngine
from structune.integrations.llama_index.handler import StructuneFinetuningHandler
from structune.integrations.llama_index.llm import StructuneLLM

__all__ = ["StructuneFinetuneEngine", "StructuneFinetuningHandler", "StructuneLLM"]
