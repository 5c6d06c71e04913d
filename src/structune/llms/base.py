"""The one small interface every model backend implements.

A backend turns chat messages into a `Completion`. `complete_many` exists so that local
backends can decode many conversations as one batch; remote and callable backends keep the
default, which simply calls `complete` in turn.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict


class Message(TypedDict):
    role: str
    content: str


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One answer of a model, with what it cost.

    Attributes:
        text: the generated text, special tokens removed.
        finish_reason: "stop" when the model ended its answer, "length" when `max_tokens` cut it.
        prompt_tokens: tokens in the rendered prompt, when the backend knows them.
        completion_tokens: tokens generated, when the backend knows them.
        latency_s: wall time until this answer was complete.
    """

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0


class LLM(ABC):
    """A chat model: messages in, a `Completion` out.

    Attributes:
        model_id: a stable name for this model, recorded with every example it produces.
    """

    model_id: str

    @abstractmethod
    def complete(
        self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.0
    ) -> Completion:
        """Answer one conversation."""

    def complete_many(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> list[Completion]:
        """Answer many conversations, in order. Local backends override this to batch."""
        return [
            self.complete(messages, max_tokens=max_tokens, temperature=temperature)
            for messages in conversations
        ]
