"""Grammar-constrained decoding inside transformers' `generate`, one matcher per row.

A transformers logits processor: at each step every row's matcher consumes the token that
row just produced, then the next-token masks of all rows are computed and applied at
once. Rows that are finished keep receiving padding from `generate`; their matchers are
stopped and ignore it. A stopped matcher allows only end-of-sequence, so a row ends as
soon as its JSON value is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from structune.constrain.grammar import SchemaGrammar
from structune.errors import UserError


class GrammarLogitsProcessor:
    """Masks each row's logits to the tokens its grammar allows next.

    Args:
        grammar: the compiled schema grammar of every row, or a list with one per row
            (extractive fields: each row copies from its own source text).
        batch_size: rows in the batch when one grammar serves them all.
    """

    def __init__(
        self, grammar: SchemaGrammar | Sequence[SchemaGrammar], batch_size: int | None = None
    ):
        grammars = [grammar] * (batch_size or 1) if isinstance(grammar, SchemaGrammar) else grammar
        self.matchers = [g.matcher() for g in grammars]
        self.started = False

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
        return scores.masked_fill(~mask, float("-inf"))
