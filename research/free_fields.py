"""Sampling only a schema's free fields: greedy where the input decides a value, sampled in
the fields no input decides (the lever proposed for #49's greedy lengths).

A greedy album student gives every movie the same `length_seconds` sequence: nothing in the
input decides a length, so the argmax is the training mode at each position. Sampling the
whole answer spreads the lengths, and also draws the titles. `free_field_sampling(llm,
fields)` is `llm` sampling only inside the values of the fields named, taking the likeliest
token everywhere else, so a sampled answer is as repeatable as its seed and otherwise the
greedy one.

How: a logits processor follows each row's answer with `JsonCursor` (the key whose value
the text so far ends inside) and, outside a free field, keeps only the argmax; transformers'
temperature and top-p run after it and cannot bring a dropped token back. It joins the
processors `LocalLLM` decodes with (after a grammar's mask, so under a schema too) by
wrapping the model's `generate`: `LocalLLM` does the batching, seeding and answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from structune.llms.local import LocalLLM


@dataclass
class _Frame:
    """An open object or array; for an object, its last key and whether a value is due."""

    is_object: bool
    key: str | None = None
    in_value: bool = False


@dataclass
class JsonCursor:
    """Where a JSON text fed piece by piece stands: `field` is the key whose value the text
    ends inside (or is about to start), None between values or outside every object."""

    _stack: list[_Frame] = field(default_factory=list)
    _in_string: bool = False
    _escaped: bool = False
    _string_is_key: bool = False
    _chars: list[str] = field(default_factory=list)

    def feed(self, text: str) -> None:
        for char in text:
            self._step(char)

    @property
    def field(self) -> str | None:
        top = self._stack[-1] if self._stack else None
        return top.key if top is not None and top.is_object and top.in_value else None

    def _step(self, char: str) -> None:
        top = self._stack[-1] if self._stack else None
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
                if self._string_is_key and top is not None:
                    top.key = "".join(self._chars)
            elif self._string_is_key:
                self._chars.append(char)
            return
        if char == '"':
            self._in_string = True
            self._string_is_key = top is not None and top.is_object and not top.in_value
            self._chars = []
        elif char in "{[":
            self._stack.append(_Frame(is_object=char == "{"))
        elif char in "}]":
            if self._stack:
                self._stack.pop()
        elif char == ":" and top is not None and top.is_object:
            top.in_value = True
        elif char == "," and top is not None and top.is_object:
            top.in_value = False


class GreedyOutside:
    """A transformers logits processor: outside the values of `fields`, every row keeps only
    its likeliest token; inside them, the scores are left for sampling."""

    def __init__(self, tokenizer: Any, fields: Sequence[str], prompt_length: int, rows: int):
        self.tokenizer = tokenizer
        self.fields = set(fields)
        self.prompt_length = prompt_length
        self.cursors = [JsonCursor() for _ in range(rows)]
        self.sampled_steps = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if input_ids.shape[1] > self.prompt_length:  # feed each row the token it just took
            for cursor, token in zip(self.cursors, input_ids[:, -1].tolist(), strict=True):
                cursor.feed(self.tokenizer.decode([token]))
        free = torch.tensor([c.field in self.fields for c in self.cursors], device=scores.device)
        self.sampled_steps += int(free.sum())
        greedy = torch.full_like(scores, float("-inf"))
        best = scores.argmax(dim=-1, keepdim=True)
        greedy.scatter_(1, best, scores.gather(1, best))
        return torch.where(free[:, None], scores, greedy)


def free_field_sampling(llm: LocalLLM, fields: Sequence[str]) -> LocalLLM:
    """`llm` (sharing its weights) that samples only inside the values of `fields`: pass it a
    `Sampling` with a temperature; greedy, it answers as `llm` does."""
    return LocalLLM(
        _GreedyOutsideModel(llm.model, llm.tokenizer, fields),
        llm.tokenizer,
        model_id=f"{llm.model_id}+sampled:{','.join(fields)}",
        batch_size=llm.batch_size,
        default_system=llm.default_system,
    )


class _GreedyOutsideModel:
    """A causal LM whose `generate` also runs `GreedyOutside`; all else is the model's."""

    def __init__(self, model: Any, tokenizer: Any, fields: Sequence[str]):
        self._model = model
        self._tokenizer = tokenizer
        self._fields = tuple(fields)
        self.sampled_steps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, **options: Any) -> Any:
        from transformers import LogitsProcessorList

        rows, width = options["input_ids"].shape
        processor = GreedyOutside(self._tokenizer, self._fields, width, rows)
        options["logits_processor"] = LogitsProcessorList(
            [*options.get("logits_processor", []), processor]
        )
        try:
            return self._model.generate(**options)
        finally:
            self.sampled_steps += processor.sampled_steps
