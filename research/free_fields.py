"""Sampling only a schema's free fields: greedy where the input decides a value, sampled in
the fields no input decides (the lever proposed for #49's greedy lengths).

A greedy album student gives every movie the same `length_seconds` sequence: nothing in the
input decides a length, so the argmax is the training mode at each position. Sampling the
whole answer spreads the lengths, and also draws the titles. `FreeFieldSampling` samples
only inside the values of the fields named, and takes the likeliest token everywhere else,
so an answer is as repeatable as its seed and otherwise the greedy one.

How: a logits processor follows each row's answer with `JsonCursor` (the key whose value
the text so far ends inside) and, outside a free field, keeps only the argmax; transformers'
temperature and top-p run after it and cannot bring a dropped token back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from structune.llms.base import LLM, SchemaPerRow
from structune.llms.local import LocalLLM
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message
from structune.models.chat import tokenize_chat


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


class FreeFieldSampling(LLM):
    """`llm` answering greedily except inside `fields`, which it samples with `sampling`.

    Plain decoding only (no schema): the question is what the student does on its own. The
    `sampling` a caller passes is not used; this wrapper's own is.
    """

    def __init__(self, llm: LocalLLM, fields: Sequence[str], sampling: Sampling):
        if sampling.greedy:
            raise ValueError("give a temperature above 0: greedy everywhere is the plain model")
        self.llm = llm
        self.fields = tuple(fields)
        self.sampling = sampling
        self.model_id = f"{llm.model_id}+sampled:{','.join(fields)}"
        self.context_window = llm.context_window
        self.sampled_steps = 0

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Any = None,
    ) -> Completion:
        return self.complete_many([messages], max_tokens=max_tokens)[0]

    def complete_many(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: SchemaPerRow = None,
    ) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        if json_schema is not None:
            raise ValueError("FreeFieldSampling decodes plainly; it takes no schema")
        tok = self.llm.tokenizer
        prompts = [
            tokenize_chat(tok, self.llm.with_default_system(m), add_generation_prompt=True)
            for m in conversations
        ]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        answers: dict[int, Completion] = {}
        with torch.random.fork_rng():
            if self.sampling.seed is not None:
                torch.manual_seed(self.sampling.seed)
            for start in range(0, len(order), self.llm.batch_size):
                batch = order[start : start + self.llm.batch_size]
                enc = tok.pad(
                    {"input_ids": [prompts[i] for i in batch]}, return_tensors="pt", padding=True
                )
                processor = GreedyOutside(tok, self.fields, enc["input_ids"].shape[1], len(batch))
                started = time.perf_counter()
                with torch.inference_mode():
                    out = self.llm.model.generate(
                        **enc,
                        max_new_tokens=max_tokens,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id,
                        do_sample=True,
                        temperature=self.sampling.temperature,
                        top_p=self.sampling.top_p,
                        top_k=None,
                        repetition_penalty=None,
                        logits_processor=LogitsProcessorList([processor]),
                    )
                latency = time.perf_counter() - started
                self.sampled_steps += processor.sampled_steps
                generated = out[:, enc["input_ids"].shape[1] :].tolist()
                for i, tokens in zip(batch, generated, strict=True):
                    finished = tok.eos_token_id in tokens
                    if finished:
                        tokens = tokens[: tokens.index(tok.eos_token_id) + 1]
                    answers[i] = Completion(
                        text=tok.decode(tokens, skip_special_tokens=True).strip(),
                        finish_reason="stop" if finished else "length",
                        prompt_tokens=len(prompts[i]),
                        completion_tokens=len(tokens),
                        latency_s=latency,
                    )
        return [answers[i] for i in range(len(prompts))]
