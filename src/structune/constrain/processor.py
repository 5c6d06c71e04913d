"""Grammar-constrained decoding inside transformers' `generate`, one matcher per row.

A transformers logits processor: at each step every row's matcher consumes the token that
row just produced, then the next-token masks of all rows are computed and applied at
once. Rows that are finished keep receiving padding from `generate`; their matchers are
stopped and ignore it. A stopped matcher allows only end-of-sequence, so a row ends as
soon as its JSON value is complete.

Closing within the budget: a small model under a grammar can loop inside a valid value
("Song 18", "Song 19", ... or digits without end) until `max_tokens` cuts it, leaving text
that does not parse. With a `BudgetClosing`, in the last `closing_reserve(max_tokens)`
steps a row that has not finished may only close what is open, wherever its grammar allows
that: inside a string, a token that starts with the closing quote; outside one, a token
that starts with `]` or `}` (tokens made of `"`, `]` and `}` alone). Where the grammar
allows neither (a required key still to come, a literal half written) the model chooses as
before. The answer then ends as valid JSON. A row whose own best token was not such a
closing token is reported in `closed_early`, so that callers can say the budget, not the
model, ended it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from structune.constrain.distinct import DistinctTracker, ban_repeats, token_bytes
from structune.constrain.grammar import SchemaGrammar
from structune.errors import UserError


def closing_reserve(max_tokens: int) -> int:
    """The last steps of a `max_tokens` budget in which open values are closed: enough for
    a few levels of nesting and the required keys still missing, never most of the budget."""
    return min(32, max_tokens // 4)


@dataclass(frozen=True)
class ClosingTokens:
    """Which tokens of a vocabulary close a string, and which close an array or object."""

    texts: list[str]  # each token as the tokenizer writes it (ASCII punctuation as itself)
    quote: Any  # bool tensor: made of `"`, `]`, `}` alone and starting with `"`
    bracket: Any  # bool tensor: made of them alone and starting with `]` or `}`


@lru_cache(maxsize=8)
def closing_tokens(tokenizer: Any) -> ClosingTokens:
    """The `ClosingTokens` of `tokenizer`'s vocabulary, computed once per tokenizer."""
    import torch

    texts = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    closing = [bool(t) and set(t) <= set('"]}') for t in texts]
    quote = [c and t[0] == '"' for c, t in zip(closing, texts, strict=True)]
    bracket = [c and t[0] != '"' for c, t in zip(closing, texts, strict=True)]
    return ClosingTokens(texts, torch.tensor(quote), torch.tensor(bracket))


@dataclass(frozen=True)
class BudgetClosing:
    """Close open values in the last steps of `max_tokens` (see the module docstring)."""

    tokens: ClosingTokens
    max_tokens: int

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, max_tokens: int) -> BudgetClosing:
        return cls(closing_tokens(tokenizer), max_tokens)

    @property
    def first_step(self) -> int:
        return self.max_tokens - closing_reserve(self.max_tokens)


class _StringState:
    """Whether a row's answer so far is inside a JSON string, from the tokens it took."""

    def __init__(self) -> None:
        self.inside = False
        self.escaped = False

    def add(self, text: str) -> None:
        for char in text:
            if self.escaped:
                self.escaped = False
            elif self.inside and char == "\\":
                self.escaped = True
            elif char == '"':
                self.inside = not self.inside


class GrammarLogitsProcessor:
    """Masks each row's logits to the tokens its grammar allows next.

    Args:
        grammar: the compiled schema grammar of every row, or a list with one per row
            (extractive fields: each row copies from its own source text).
        batch_size: rows in the batch when one grammar serves them all.
        closing: close open values as the budget runs out (see the module docstring).
    """

    def __init__(
        self,
        grammar: SchemaGrammar | Sequence[SchemaGrammar],
        batch_size: int | None = None,
        *,
        closing: BudgetClosing | None = None,
    ):
        grammars = [grammar] * (batch_size or 1) if isinstance(grammar, SchemaGrammar) else grammar
        self.matchers = [g.matcher() for g in grammars]
        # Rows with distinct lists (`structune.constrain.distinct`): their answers so far.
        self.distinct = [
            DistinctTracker(g.distinct, token_bytes(g.ll_tokenizer)[0]) if g.distinct else None
            for g in grammars
        ]
        self.quote_tokens = [token_bytes(g.ll_tokenizer)[1] if g.distinct else [] for g in grammars]
        self.started = False
        self.steps = 0
        self.closing = closing
        self.strings = [_StringState() for _ in self.matchers] if closing else []
        self.closed_early: set[int] = set()  # rows whose end the budget forced

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        if self.started:
            for row, matcher in enumerate(self.matchers):
                token = int(input_ids[row, -1])
                if self.closing is not None and not matcher.is_stopped():
                    self.strings[row].add(self.closing.tokens.texts[token])
                tracker = self.distinct[row]
                if tracker is not None and not matcher.is_stopped():
                    tracker.add(token)
                if not matcher.is_stopped() and not matcher.consume_token(token):
                    # The token was allowed by the mask, so the engine hit one of its limits
                    # (`grammar._engine_limits`): a schema too costly at this point of an answer.
                    raise UserError(
                        f"constrained decoding stopped: {matcher.get_error()}; the schema is "
                        "too complex for the grammar engine's limits: simplify it"
                    )
        self.started = True
        packed = np.stack(
            [np.frombuffer(m.compute_bitmask(), dtype=np.uint8) for m in self.matchers]
        )
        if not packed.any(axis=1).all():  # a row with no allowed token can never finish
            row = int(np.flatnonzero(~packed.any(axis=1))[0])
            raise UserError(
                "the schema admits no value the model could write next "
                f"({self.matchers[row].get_error() or 'empty token mask'}); "
                "check it for contradictions such as minimum > maximum"
            )
        allowed = np.unpackbits(packed, axis=1, bitorder="little")  # (batch, 32 * ceil(vocab/32))
        vocab = scores.shape[1]
        mask = torch.zeros(scores.shape, dtype=torch.bool)
        width = min(vocab, allowed.shape[1])
        mask[:, :width] = torch.from_numpy(allowed[:, :width].astype(bool))
        # The ban before the budget's closing: a close that repeats an item is no way out
        # (the answer would fail the schema's check); the row writes on and closes after.
        for row, tracker in enumerate(self.distinct):
            if tracker is not None:
                ban_repeats(tracker, mask[row], self.quote_tokens[row])
        if self.closing is not None and self.steps >= self.closing.first_step:
            self._close_open_values(mask, scores)
        self.steps += 1
        return scores.masked_fill(~mask, float("-inf"))

    def _close_open_values(self, mask: Any, scores: Any) -> None:
        assert self.closing is not None
        tokens = self.closing.tokens
        width = min(mask.shape[1], tokens.quote.shape[0])
        for row, matcher in enumerate(self.matchers):
            if matcher.is_stopped():
                continue
            closers = tokens.quote if self.strings[row].inside else tokens.bracket
            closing = mask[row, :width] & closers[:width]
            if not closing.any():
                continue
            best = int(scores[row].masked_fill(~mask[row], float("-inf")).argmax())
            if best >= width or not closing[best]:
                self.closed_early.add(row)
            mask[row] = False
            mask[row, :width] = closing

    def accepts_after(self, row: int, token: int) -> bool:
        """Whether `row`'s answer is complete once `token`, its last, is added: a row the
        budget closed on its very last step had no step left for end-of-sequence."""
        matcher = self.matchers[row]
        return matcher.is_stopped() or (
            matcher.consume_token(token) and (matcher.is_accepting() or matcher.is_stopped())
        )
