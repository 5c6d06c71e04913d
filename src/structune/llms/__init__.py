"""Model backends behind one interface: local transformers, OpenAI-compatible HTTP, callables.

Import backends from their modules (`structune.llms.local.LocalLLM`,
`structune.llms.openai_compat.OpenAICompatibleLLM`); this package imports nothing heavy, so
that importing any part of structune stays fast.
"""

from structune.llms.base import LLM
from structune.messages import Completion, Message

__all__ = ["LLM", "Completion", "Message"]
