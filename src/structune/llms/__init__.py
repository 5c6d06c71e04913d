"""Model backends behind one interface: local transformers, OpenAI-compatible HTTP, callables.

`LocalLLM` lives in `structune.llms.local` and is imported from there, so that importing
this package does not import torch.
"""

from structune.llms.base import LLM, Completion, Message
from structune.llms.callable import CallableLLM
from structune.llms.openai_compat import OpenAICompatibleLLM

__all__ = ["LLM", "CallableLLM", "Completion", "Message", "OpenAICompatibleLLM"]
