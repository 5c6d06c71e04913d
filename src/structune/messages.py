"""What goes into a model and what comes out: chat messages and completions.

These sit below every layer that handles conversations (`models` renders them, `llms`
answers them, `train` learns from them, `record` stores them), so none of those needs to
import another to name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict

if TYPE_CHECKING:
    from structune.constrain.checked import SchemaCheck


class Message(TypedDict):
    role: str
    content: str
    # Training only, on a conversation's final answer: its characters before this offset
    # are given, not learned (`structune.train.data.tokenize_conversation`).
    learn_from: NotRequired[int]


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One answer of a model, with what it cost.

    Attributes:
        text: the generated text, special tokens removed.
        finish_reason: "stop" when the answer ended, "length" when `max_tokens` cut it.
        closed_early: the answer ended because a grammar closed its open values in the
            last tokens of `max_tokens` (`structune.constrain.processor`): it parses, but
            the model had not finished on its own.
        prompt_tokens: tokens in the rendered prompt, when the backend knows them.
        completion_tokens: tokens generated, when the backend knows them.
        latency_s: wall time until this answer was complete (for a batched local model,
            the whole batch's time).
        schema_check: for an answer decoded under a grammar, what the grammar enforced,
            what was only checked, and a violation of the full schema that re-sampling did
            not cure (`structune.constrain.checked`); None without a grammar.
    """

    text: str
    finish_reason: FinishReason = "stop"
    closed_early: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    schema_check: SchemaCheck | None = None
