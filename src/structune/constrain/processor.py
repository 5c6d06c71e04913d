"""Grammar-constrained decoding inside transformers' `generate`, one matcher per row.

A transformers logits processor: at each step every row's matcher consumes the token that
row just produced, then the next-token masks of all rows are computed and applied at
once. Rows that are finished keep receiving padding from `generate`; their matchers are
stopped and ignore it. A stopped matcher allows only end-of-sequence, so a row ends as
soon as its JSON value is complete.

Closing within the budget: a small model under a grammar can loop inside a valid value
("Song 18", "Song 19", ... or digits without end) until `max_tokens` cuts it, leaving text
that does not parse. In the last `closing_reserve(max_tokens)` steps, a row that has not
finished may only take tokens that close what is open (made of `"`, `]` and `}` alone)
wherever the grammar allows one; where it allows none (a required key still to come, a
literal half written) the model chooses as before. The answer then ends as valid JSON, and
the row is reported in `closed_early` so that callers can say so rather than count it as
the model's own finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from structune.constrain.grammar import SchemaGrammar
from structune.errors import UserError


def closing_reserve(max_tokens: int) -> int:
    """The last steps of a `max_tokens` budget in which open values are closed: enough for
    a few levels of nesting and the required keys still missing, never most of the budget."""
    return min(32, max_tokens // 4)


@lru_cache(maxsize=8)
def closing_tokens(tokenizer: Any) -> Any:
    """A boolean tensor over `tokenizer`'s vocabulary: the tokens made of `"`, `]` and `}`
    alone, which close a string, an array or an object."""
    import torch

    texts = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    closing = [bool(t) and set(t) <= set('"]}') for t in texts]
    return torch.tensor(closing, dtype=torch.bool)


class GrammarLogitsProcessor:
    """Masks each row's logits to the tokens its grammar allows next.

    Args:
        grammar: the compiled schema grammar of every row, or a list with one per row
            (extractive fields: each row copies from its own source text).
        batch_size: rows in the batch when one grammar serves them all.
        max_tokens: the answer budget; with `closing`, open values are closed in its last
            `closing_reserve(max_tokens)` steps (see the module docstring).
        closing: `closing_tokens(tokenizer)`.
    """

    def __init__(
        self,
        grammar: SchemaGrammar | Sequence[SchemaGrammar],
        batch_size: int | None = None,
        *,
        max_tokens: int | None = None,
        closing: Any = None,
    ):
        grammars = [grammar] * (batch_size or 1) if isinstance(grammar, SchemaGrammar) else grammar
        self.matchers = [g.matcher() for g in grammars]
        self.started = False
        self.steps = 0
        self.closing = closing
        self.close_from = (
            max_tokens - closing_reserve(max_tokens) if max_tokens and closing is not None else None
        )
        self.closed_early: set[int] = set()  # rows whose end the budget forced

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        if self.started:
            for row, matcher in enumerate(self.matchers):
                if not matcher.is_stopped() and not matcher.consume_token(int(input_ids[row, -1])):
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
        if self.close_from is not None and self.steps >= self.close_from:
            self._close_open_values(mask)
        self.steps += 1
        return scores.masked_fill(~mask, float("-inf"))

    def _close_open_values(self, mask: Any) -> None:
        width = min(mask.shape[1], self.closing.shape[0])
        closing = mask[:, :width] & self.closing[:width]
        for row, matcher in enumerate(self.matchers):
            if not matcher.is_stopped() and closing[row].any():
                mask[row] = False
                mask[row, :width] = closing[row]
                self.closed_early.add(row)
