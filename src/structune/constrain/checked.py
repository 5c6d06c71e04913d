"""Every constrained answer checked against the full schema, and re-sampled on a violation.

A grammar holds an answer to what it can enforce: the schema itself, rewritten exactly
(`structune.constrain.rewrite`), or, where a keyword has no grammar and the caller asked
for it (`relaxed`), a looser schema. Either way each finished answer is then validated with
`jsonschema` against the full schema, read in its own draft with its formats checked: an
engine's regex and a validator can disagree (February 29th of a common year). A violation
is decoded again, sampling with a seed, at most `MAX_RESAMPLES` times; one that survives is
reported in the answer's `SchemaCheck.violation`, which `Program.run` raises as
`InvalidOutput` and the server answers as an error: never as a valid-looking answer.

Relaxing is opt-in, per schema: the top-level extension keyword `x-structune-relax: true`
(`relaxed(schema)`, `Program.run(relax=True)`). It travels with the schema through every
layer, the HTTP API included, as the extracted fields' sources do. Without it, a schema
that needs relaxing is refused, naming the keywords.

`jsonschema` is imported when a schema is first checked, not with this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from structune.constrain.keywords import Dialect
    from structune.llms.sampling import Sampling
    from structune.messages import Completion

RELAX_KEY = "x-structune-relax"
# A violation is decoded again at most this many times (`resampling`).
MAX_RESAMPLES = 3
RESAMPLE_TEMPERATURE = 0.7
RESAMPLE_SEED = 0  # attempt n samples with seed RESAMPLE_SEED + n: reruns repeat
_MAX_MESSAGE = 300


def resampling(sampling: Sampling, attempt: int) -> Sampling:
    """How attempt `attempt` decodes a violation again: at the request's sampling, or at
    RESAMPLE_TEMPERATURE for a greedy request (greedy would repeat it), with the seed
    RESAMPLE_SEED + attempt."""
    return replace(
        sampling,
        temperature=sampling.temperature or RESAMPLE_TEMPERATURE,
        seed=RESAMPLE_SEED + attempt,
    )


def relaxed(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema`, allowed to decode under a looser grammar when it has keywords no grammar
    can enforce; every answer is still checked against all of it."""
    return {**schema, RELAX_KEY: True}


def wants_relaxing(schema: Mapping[str, Any]) -> bool:
    """Whether `schema` carries `relaxed`'s mark."""
    return schema.get(RELAX_KEY) is True


@dataclass(frozen=True)
class Coverage:
    """How a schema is held while decoding.

    Attributes:
        enforced: its keywords that the grammar enforces.
        rewritten: keywords rewritten exactly before compiling ("oneOf at #/x: anyOf ...").
        checked: keywords the grammar does not enforce: only checked on finished answers.
    """

    enforced: tuple[str, ...] = ()
    rewritten: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchemaCheck:
    """What held one answer to its schema.

    Attributes:
        coverage: what the grammar enforced and what was only checked.
        resamples: how many times the answer was decoded again after a violation.
        violation: the validator's message, for a finished answer that still violates the
            full schema after the re-samples; None when it validates or did not finish.
    """

    coverage: Coverage
    resamples: int = 0
    violation: str | None = None


class Held(Protocol):
    """What held an answer while decoding (a `SchemaGrammar`, or llama.cpp's `HeldBy`)."""

    @property
    def coverage(self) -> Coverage: ...

    @property
    def checker(self) -> SchemaChecker | None: ...


@dataclass(frozen=True)
class HeldBy:
    """A grammar outside llguidance (llama.cpp's) and the full schema's check."""

    coverage: Coverage
    checker: SchemaChecker | None


class SchemaChecker:
    """Validates answers against one full schema, in the schema's own draft, formats too."""

    def __init__(self, schema: Mapping[str, Any]):
        cls = validator_class(schema)
        self.validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def violation(self, text: str) -> str | None:
        """Why `text` is not an instance of the schema, or None when it is."""
        from jsonschema.exceptions import best_match

        try:
            value = json.loads(text)
        except ValueError as exc:
            return f"not JSON: {exc}"
        try:
            error = best_match(self.validator.iter_errors(value))
        except Exception as exc:  # an unresolvable $ref, a malformed keyword: not checked
            return _short(f"cannot be checked against the schema: {type(exc).__name__}: {exc}")
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return _short(f"{where}: {error.message}")


def validator_class(schema: Mapping[str, Any]) -> Any:
    """jsonschema's validator for the schema's `$schema` (2020-12 when it names none)."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    if not isinstance(schema.get("$schema", ""), str):
        return Draft202012Validator
    return validator_for(schema, default=Draft202012Validator)


def dialect_of(schema: Mapping[str, Any]) -> Dialect:
    """How `schema`'s own draft reads its keywords (`structune.constrain.keywords.Dialect`)."""
    return _dialect(validator_class(schema))


@lru_cache(maxsize=8)
def _dialect(cls: Any) -> Dialect:
    from structune.constrain.keywords import Dialect

    def accepts(schema: Any, value: Any) -> bool:
        return bool(cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(value))

    return Dialect(
        keywords=frozenset(cls.VALIDATORS),
        formats=frozenset(cls.FORMAT_CHECKER.checkers),
        uri=str(cls.META_SCHEMA.get("$id", cls.META_SCHEMA.get("id", ""))),
        accepts=accepts,
    )


def check_answers(
    completions: Sequence[Completion],
    grammars: Sequence[Held],
    resample: Callable[[list[int], int], list[Completion]],
) -> list[Completion]:
    """`completions` with every violation of the full schema decoded again.

    Args:
        completions: one finished or cut answer per row.
        grammars: the grammar each row decoded under, with its full schema's check.
        resample: `resample(rows, attempt)` decodes those rows again, sampling as
            `resampling(sampling, attempt)` says, and returns one completion per row.

    Returns:
        The answers, each with its `schema_check`; a violation left after `MAX_RESAMPLES`
        is in it, never dropped.
    """

    def violation(row: int, completion: Completion) -> str | None:
        checker = grammars[row].checker
        if checker is None or completion.finish_reason != "stop":
            return None  # a cut answer is reported as cut already
        return checker.violation(completion.text)

    results = list(completions)
    violations = {i: violation(i, c) for i, c in enumerate(results)}
    resamples = dict.fromkeys(violations, 0)
    for attempt in range(1, MAX_RESAMPLES + 1):
        rows = [i for i, v in violations.items() if v is not None]
        if not rows:
            break
        for row, again in zip(rows, resample(rows, attempt), strict=True):
            results[row] = replace(again, latency_s=results[row].latency_s + again.latency_s)
            resamples[row] = attempt
            violations[row] = violation(row, again)
    return [
        replace(c, schema_check=SchemaCheck(grammars[i].coverage, resamples[i], violations[i]))
        for i, c in enumerate(results)
    ]


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + "…"
