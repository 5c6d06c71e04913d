"""Compare models on a program over held-out inputs: how many answers parse, how many
validate, how many were cut off by `max_tokens`, and what they cost in time.

"Parsed" means a JSON object could be extracted from the text; "valid" means it also
validates against the output model. A model's whole batch of inputs goes through
`complete_many`, so local models are measured the way they run best (batched).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from structune.errors import InvalidOutput
from structune.llms.base import LLM
from structune.program import Program, extract_json_object


@dataclass(frozen=True)
class Answer:
    inputs: dict[str, Any]
    text: str
    parsed: bool
    valid: bool
    truncated: bool
    error: str | None


@dataclass(frozen=True)
class ModelScore:
    model: str
    answers: int
    parsed: int
    valid: int
    truncated: int
    wall_s: float
    completion_tokens: int

    @property
    def valid_rate(self) -> float:
        return self.valid / self.answers if self.answers else 0.0

    @property
    def seconds_per_answer(self) -> float:
        return self.wall_s / self.answers if self.answers else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s else 0.0


@dataclass
class Comparison:
    task: str
    scores: list[ModelScore] = field(default_factory=list)
    answers: dict[str, list[Answer]] = field(default_factory=dict)

    def table(self) -> str:
        columns = ("parsed", "valid", "truncated", "s/answer", "tok/s")
        header = f"{'model':<34} {columns[0]:>8} {columns[1]:>8} {columns[2]:>9} " + (
            f"{columns[3]:>9} {columns[4]:>7}"
        )
        rows = [header, "-" * len(header)]
        for s in self.scores:
            rows.append(
                f"{s.model:<34} {s.parsed:>4}/{s.answers:<3} {s.valid:>4}/{s.answers:<3} "
                f"{s.truncated:>9} {s.seconds_per_answer:>9.2f} {s.tokens_per_s:>7.1f}"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "scores": [
                {
                    **asdict(s),
                    "valid_rate": s.valid_rate,
                    "seconds_per_answer": s.seconds_per_answer,
                    "tokens_per_s": s.tokens_per_s,
                }
                for s in self.scores
            ],
            "answers": {m: [asdict(a) for a in answers] for m, answers in self.answers.items()},
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))


def compare(
    program: Program[Any],
    models: Mapping[str, LLM],
    inputs: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int = 512,
) -> Comparison:
    """Run `program` on every input with every model and score the answers.

    Args:
        program: the program to answer.
        models: display name → model, e.g. {"base": ..., "tuned": ..., "teacher": ...}.
        inputs: held-out inputs (keep them out of the training data).
        max_tokens: the answer budget; answers cut off here count as truncated.
    """
    conversations = [program.messages(item) for item in inputs]
    comparison = Comparison(task=program.name)
    for name, llm in models.items():
        started = time.perf_counter()
        completions = llm.complete_many(conversations, max_tokens=max_tokens)
        wall = time.perf_counter() - started
        answers = [
            _score_answer(program, dict(item), c.text, c.finish_reason == "length")
            for item, c in zip(inputs, completions, strict=True)
        ]
        comparison.answers[name] = answers
        comparison.scores.append(
            ModelScore(
                model=name,
                answers=len(answers),
                parsed=sum(a.parsed for a in answers),
                valid=sum(a.valid for a in answers),
                truncated=sum(a.truncated for a in answers),
                wall_s=round(wall, 3),
                completion_tokens=sum(c.completion_tokens or 0 for c in completions),
            )
        )
    return comparison


def _score_answer(
    program: Program[Any], inputs: dict[str, Any], text: str, truncated: bool
) -> Answer:
    try:
        extract_json_object(text)
    except InvalidOutput as exc:
        return Answer(
            inputs, text, parsed=False, valid=False, truncated=truncated, error=exc.reason
        )
    try:
        program.parse(text, inputs)
    except InvalidOutput as exc:
        return Answer(inputs, text, parsed=True, valid=False, truncated=truncated, error=exc.reason)
    return Answer(inputs, text, parsed=True, valid=True, truncated=truncated, error=None)
