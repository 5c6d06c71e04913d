"""Compare models on a program over held-out inputs: how many answers parse, how many
validate, how many were cut off by `max_tokens`, and what they cost in time.

"Parsed" means a JSON object could be extracted from the text; "valid" means it also
validates against the output model, extracted fields included. A model's whole batch of
inputs goes through `complete_many`, so local models are measured the way they run best
(batched); a `Constrained` model gets each row's own decoding schema.

With gold answers, each top-level field of every answer is compared with the gold one
(after validation, so `"2020"` and `2020` agree where the model says int): per-field
accuracy and whole-answer exact match, over all answers (an unparsable answer is wrong in
every field). For a program with extracted fields, the marked values of every parsed
answer are looked up in their source: the share not found is the rate of invented values.

Every model's valid answers also get `ContentScores` (`structune.evaluate.content`):
repeated list items, constant and echoed values, with the training answers the share
copied from them, and with gold answers the valid-but-wrong count. `table()` shows them as
`wrong|valid`, `all-distinct`, `distinct`, `const`, `echo` and `copied`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pydantic

from structune.constrain.extractive import audit_extracted
from structune.errors import InvalidOutput, UserError
from structune.evaluate.agreement import agreement
from structune.evaluate.content import (
    ContentScores,
    content_scores,
    table_columns,
    table_header,
    table_row,
)
from structune.llms.base import LLM, Constrained
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion
from structune.program import Program, extract_json_object


@dataclass(frozen=True)
class Answer:
    inputs: dict[str, Any]
    text: str
    parsed: bool
    valid: bool
    truncated: bool
    error: str | None
    marked: int = 0
    not_in_source: int = 0
    correct_fields: list[str] | None = None


@dataclass(frozen=True)
class ModelScore:
    model: str
    answers: int
    parsed: int
    valid: int
    truncated: int
    wall_s: float
    completion_tokens: int
    marked: int = 0
    not_in_source: int = 0
    closed_early: int = 0  # answers a grammar closed as the budget ran out (still parsed)
    field_correct: dict[str, int] | None = None
    exact: int | None = None
    content: ContentScores | None = None

    @property
    def not_in_source_rate(self) -> float:
        """The share of marked values that are not copied from their source."""
        return self.not_in_source / self.marked if self.marked else 0.0

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
        """One row per model; extraction, content and gold columns where the comparison has
        them (the content columns are defined in `structune.evaluate.content`)."""
        extracted = any(s.marked for s in self.scores)
        fields = next((list(s.field_correct) for s in self.scores if s.field_correct), [])
        closed = any(s.closed_early for s in self.scores)
        content = table_columns(s.content for s in self.scores)
        header = f"{'model':<34} {'parsed':>8} {'valid':>8} {'truncated':>9}"
        if closed:
            header += f" {'closed early':>12}"
        if extracted:
            header += f" {'not in source':>13}"
        header += table_header(content)
        for name in fields:
            header += f" {name[:12]:>12}"
        if fields:
            header += f" {'exact':>8}"
        header += f" {'s/answer':>9} {'tok/s':>7}"
        rows = [header, "-" * len(header)]
        for s in self.scores:
            n = s.answers
            row = f"{s.model:<34} {s.parsed:>4}/{n:<3} {s.valid:>4}/{n:<3} {s.truncated:>9}"
            if closed:
                row += f" {s.closed_early:>12}"
            if extracted:
                row += f" {s.not_in_source:>6}/{s.marked:<6}"
            row += table_row(s.content, content)
            for name in fields:
                row += f" {(s.field_correct or {}).get(name, 0):>8}/{n:<3}"
            if fields:
                row += f" {s.exact or 0:>4}/{n:<3}"
            row += f" {s.seconds_per_answer:>9.2f} {s.tokens_per_s:>7.1f}"
            rows.append(row)
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "scores": [
                {
                    **asdict(s),
                    "content": s.content.to_dict() if s.content is not None else None,
                    "valid_rate": s.valid_rate,
                    "not_in_source_rate": s.not_in_source_rate,
                    "seconds_per_answer": s.seconds_per_answer,
                    "tokens_per_s": s.tokens_per_s,
                }
                for s in self.scores
            ],
            "answers": {m: [asdict(a) for a in answers] for m, answers in self.answers.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """The comparison `to_dict` wrote, its answers and scores as they were."""
        names = {f.name for f in fields(ModelScore)} - {"content"}
        return cls(
            task=data["task"],
            scores=[
                ModelScore(
                    **{k: v for k, v in s.items() if k in names},
                    content=ContentScores.from_dict(s["content"]) if s.get("content") else None,
                )
                for s in data["scores"]
            ],
            answers={m: [Answer(**a) for a in answers] for m, answers in data["answers"].items()},
        )

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))


def compare(
    program: Program[Any],
    models: Mapping[str, LLM],
    inputs: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int = 512,
    sampling: Sampling = GREEDY,
    gold: Sequence[pydantic.BaseModel | Mapping[str, Any]] | None = None,
    training_answers: Sequence[pydantic.BaseModel | Mapping[str, Any]] | None = None,
) -> Comparison:
    """Run `program` on every input with every model and score the answers.

    Args:
        program: the program to answer.
        models: display name → model, e.g. {"base": ..., "tuned": ..., "teacher": ...};
            wrap a model in `Constrained` for a row decoded under the program's schema.
        inputs: held-out inputs (keep them out of the training data).
        max_tokens: the answer budget; answers cut off here count as truncated.
        sampling: how every model picks tokens (greedy by default).
        gold: the right answer to each input (objects of the output model, or their JSON
            data), for per-field accuracy and exact match.

    Raises:
        UserError: `gold` does not have one valid answer per input.
    """
    conversations = [program.messages(item) for item in inputs]
    expected = _gold_data(program, gold, len(inputs)) if gold is not None else None
    training = [_as_data(a) for a in training_answers] if training_answers is not None else None
    comparison = Comparison(task=program.name)
    for name, llm in models.items():
        schemas = (
            [program.decoding_schema(item) for item in inputs]
            if isinstance(llm, Constrained)
            else None
        )
        started = time.perf_counter()
        completions = llm.complete_many(
            conversations, max_tokens=max_tokens, sampling=sampling, json_schema=schemas
        )
        wall = time.perf_counter() - started
        answers = [
            _score_answer(program, dict(item), c, expected[i] if expected else None)
            for i, (item, c) in enumerate(zip(inputs, completions, strict=True))
        ]
        comparison.answers[name] = answers
        data = [answer_data(program, a) if a.valid else None for a in answers]
        agreed = (
            [
                agreement(d, g) if d is not None else None
                for d, g in zip(data, expected, strict=True)
            ]
            if expected
            else None
        )
        field_correct = (
            {f: sum(f in (a.correct_fields or ()) for a in answers) for f in expected[0]}
            if expected
            else None
        )
        comparison.scores.append(
            ModelScore(
                model=name,
                answers=len(answers),
                parsed=sum(a.parsed for a in answers),
                valid=sum(a.valid for a in answers),
                truncated=sum(a.truncated for a in answers),
                wall_s=round(wall, 3),
                completion_tokens=sum(c.completion_tokens or 0 for c in completions),
                marked=sum(a.marked for a in answers),
                not_in_source=sum(a.not_in_source for a in answers),
                closed_early=sum(c.closed_early for c in completions),
                field_correct=field_correct,
                exact=(
                    sum(len(a.correct_fields or ()) == len(expected[0]) for a in answers)
                    if expected
                    else None
                ),
                content=content_scores(data, training_answers=training, agreements=agreed),
            )
        )
    return comparison


def answer_data(program: Program[Any], answer: Answer) -> dict[str, Any] | None:
    """The answer as JSON data validated by the output model, or None when it is not one
    (values not copied from the source still count: agreement judges them)."""
    if not answer.parsed:
        return None
    try:
        data = extract_json_object(answer.text)
        return program.output_cls.model_validate(data).model_dump(mode="json")
    except (InvalidOutput, pydantic.ValidationError):
        return None


def _as_data(answer: pydantic.BaseModel | Mapping[str, Any]) -> Any:
    return answer.model_dump(mode="json") if isinstance(answer, pydantic.BaseModel) else answer


def _gold_data(
    program: Program[Any], gold: Sequence[pydantic.BaseModel | Mapping[str, Any]], rows: int
) -> list[dict[str, Any]]:
    """Gold answers as validated JSON data, one per input."""
    if len(gold) != rows:
        raise UserError(f"got {len(gold)} gold answers for {rows} inputs; give one per input")
    data = []
    for i, answer in enumerate(gold):
        try:
            value = program.output_cls.model_validate(answer)
        except pydantic.ValidationError as exc:
            raise UserError(
                f"gold answer {i} is not a valid {program.output_cls.__name__}: {exc}"
            ) from None
        data.append(value.model_dump(mode="json"))
    return data


def _score_answer(
    program: Program[Any],
    inputs: dict[str, Any],
    completion: Completion,
    gold: dict[str, Any] | None,
) -> Answer:
    text, truncated = completion.text, completion.finish_reason == "length"
    try:
        data = extract_json_object(text)
    except InvalidOutput as exc:
        nothing: list[str] | None = [] if gold is not None else None
        return Answer(inputs, text, False, False, truncated, exc.reason, correct_fields=nothing)
    audit = audit_extracted(program.json_schema, data, program.sources(inputs))
    correct = _correct_fields(program, data, gold) if gold is not None else None
    try:
        program.parse_completion(completion, inputs)
        error = None
    except InvalidOutput as exc:
        error = exc.reason
    return Answer(
        inputs, text, True, error is None, truncated, error, audit.values, audit.missing, correct
    )


def _correct_fields(program: Program[Any], data: Any, gold: dict[str, Any]) -> list[str]:
    """The top-level fields of `data` equal to gold once validated by the output model (a
    field can be right in an answer whose other values were not copied from the input)."""
    try:
        answer = program.output_cls.model_validate(data).model_dump(mode="json")
    except pydantic.ValidationError:
        return []
    return [f for f, value in gold.items() if answer.get(f) == value]
