"""How a model picks each token: the decoding options every backend takes as one value.

`Sampling` is frozen and hashable, so the server batches requests by it and a record can
carry it. Temperature 0 decodes greedily (`GREEDY`, the default everywhere); a
`repetition_penalty` applies greedy or sampled. Under a grammar the options shape only the
choice among the tokens the grammar allows: a local model masks forbidden tokens after the
repetition penalty, and temperature and top-p then only rescale or drop tokens, so no option
can make an answer leave its schema. A `seed` makes a sampled answer repeat for the same
conversations decoded in the same batches (the rows of a batch share one random stream).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from structune.errors import UserError

MAX_TEMPERATURE = 2.0  # the OpenAI API's range
MAX_SEED = 2**32 - 1  # llama.cpp's seeds are 32-bit


@dataclass(frozen=True)
class Sampling:
    """Decoding options.

    Attributes:
        temperature: 0 picks the likeliest token (greedy); up to 2, sampling flattens.
        top_p: sample only from the likeliest tokens whose probabilities add up to this,
            in (0, 1]; 1 keeps every token.
        seed: the random seed of a sampled answer, from 0 to `MAX_SEED`; None draws afresh.
        repetition_penalty: above 1 discourages tokens already in the prompt or answer,
            below 1 favours them; 1 leaves the logits alone.

    Example: `program.run(llm, inputs, sampling=Sampling(temperature=0.7, seed=1),
    constrained=True)` samples an answer that is still held to the schema.

    Raises:
        UserError: a value out of its range, naming the field and the range.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not (_finite(self.temperature) and 0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise UserError(
                f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, "
                f"got {self.temperature!r}"
            )
        if not (_finite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise UserError(f"top_p must be in (0, 1] (1 keeps every token), got {self.top_p!r}")
        if self.seed is not None and not (_integer(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise UserError(
                f"seed must be an integer from 0 to {MAX_SEED}, or None, got {self.seed!r}"
            )
        if not (_finite(self.repetition_penalty) and self.repetition_penalty > 0.0):
            raise UserError(
                "repetition_penalty must be a finite number above 0 (1 is no penalty), "
                f"got {self.repetition_penalty!r}"
            )

    @property
    def greedy(self) -> bool:
        """Whether each token is the likeliest one (temperature 0): no randomness."""
        return self.temperature == 0.0


def _finite(value: object) -> bool:
    """A real int or float, neither NaN nor infinite (a bool or a string is a mistake)."""
    return _integer(value) or (isinstance(value, float) and math.isfinite(value))


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


GREEDY = Sampling()
