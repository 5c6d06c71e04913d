"""A plain Python function as a model: the offline teacher, and the easiest fake in tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from structune.errors import UserError
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message


class CallableLLM(LLM):
    """Wraps `fn(messages) -> str` as an `LLM`.

    Args:
        fn: returns the answer text for a conversation.
        model_id: the name recorded as the teacher; defaults to the function's name.

    The function answers as it answers: `sampling` is not passed to it.
    """

    def __init__(self, fn: Callable[[Sequence[Message]], str], *, model_id: str | None = None):
        self.fn = fn
        self.model_id = model_id or f"callable:{getattr(fn, '__name__', 'fn')}"

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        if json_schema is not None:
            raise UserError(
                f"{self.model_id} is a plain function and cannot be held to a schema; "
                "constrained decoding needs a local model"
            )
        start = time.perf_counter()
        text = self.fn(messages)
        return Completion(text=text, latency_s=time.perf_counter() - start)
