"""An evaluation report: a comparison of models plus their agreement with a reference.

`evaluate` runs `compare` and scores every valid answer against a reference answer for
the same input, leaf field by leaf field (`structune.evaluate.agreement`). The reference
is either gold answers or one of the compared models (a teacher): its own row then reads
"reference", and inputs it answered invalidly are left out of every model's agreement.
Mistakes are caught before any model runs (`check_setup`): no inputs, a gold count that
is not the input count, gold lines that do not fit the schema, an adapter trained for
another task.

Beside validity, every model's valid answers carry content scores
(`structune.evaluate.content`: repeated list items, constant and echoed values, values
copied from the training answers when they are given); with a reference, the valid answers
that disagree with it are counted as valid but wrong.

`EvalReport` renders as a terminal table, JSON, and one self-contained HTML file: the
numbers, per-model bars of rates and of content, the most common value per field, the
adapters' training loss curves and each model's worst disagreements beside the reference.
The page is drawn by `structune.evaluate.report_html`, its plots by
`structune.evaluate.plots` (matplotlib, imported only by `write_html`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pydantic

from structune.adapters import AdapterManifest, load_manifest
from structune.errors import UserError
from structune.evaluate.agreement import DEFAULT_REL_TOL, Agreement, agreement, combined
from structune.evaluate.compare import Comparison, ModelScore, answer_data, compare
from structune.evaluate.content import (
    ContentScores,
    table_columns,
    table_header,
    table_row,
    valid_but_wrong,
)
from structune.evaluate.plots import require_matplotlib as require_matplotlib
from structune.fileio import write_atomically
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.program import Program, short_validation_error

log = logging.getLogger(__name__)

WORST_PER_MODEL = 3
"""Disagreements shown per model in the HTML report."""


def read_gold(path: str | Path, program: Program[Any]) -> list[dict[str, Any]]:
    """Reference answers from a JSONL file, one object per input line (blank lines skipped,
    as `read_inputs` skips them), each validated against the program's output model.

    Raises:
        UserError: a missing file, or a line that is not JSON or not a valid answer (named
            by its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"gold answers file {path} not found")
    name = program.output_cls.__name__
    answers = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = program.output_cls.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        except pydantic.ValidationError as exc:
            raise UserError(
                f"{path}:{number}: not a valid {name} for program {program.name!r} "
                f"({short_validation_error(exc)}); gold answers must fit the program's schema"
            ) from None
        answers.append(value.model_dump(mode="json"))
    return answers


def adapter_manifests(specs: Iterable[str]) -> list[AdapterManifest]:
    """The manifests of the adapters that model specs name: `local:BASE+ID`, or a bare id
    (resolved as `llm_from_spec` resolves it), so they can be checked before loading."""
    from structune.models.loading import BUILTIN_MODELS
    from structune.paths import adapters_dir

    ids = []
    for spec in specs:
        if spec.startswith("local:"):
            adapter = spec.removeprefix("local:").partition("+")[2]
        elif ":" in spec or spec in BUILTIN_MODELS or not (adapters_dir() / spec).is_dir():
            adapter = ""
        else:
            adapter = spec
        if adapter and adapter not in ids:
            ids.append(adapter)
    return [load_manifest(a) for a in ids]


def check_setup(
    program: Program[Any],
    inputs: Sequence[Mapping[str, Any]],
    *,
    gold: Sequence[Any] | None = None,
    adapters: Sequence[AdapterManifest] = (),
) -> None:
    """Refuse an evaluation that cannot mean anything, before any model is loaded.

    Raises:
        UserError: no inputs, not one gold answer per input, or an adapter whose manifest
            records another task than the program's.
    """
    if not inputs:
        raise UserError(
            "no held-out inputs to evaluate on; the inputs file needs at least one line "
            "(a JSON object of input variables, or a text value for one-variable programs)"
        )
    if gold is not None and len(gold) != len(inputs):
        raise UserError(
            f"got {len(gold)} gold answers for {len(inputs)} inputs; give exactly one per "
            "input, line by line in the same order"
        )
    for m in adapters:
        if m.task is None:
            log.warning("adapter %s does not record its task; cannot check it fits", m.id)
        elif m.task != program.name:
            raise UserError(
                f"adapter {m.id} was trained for task {m.task!r}, not {program.name!r}: its "
                f"answers follow another schema; evaluate it with --program for {m.task!r}, "
                f"or train an adapter on {program.name!r} examples"
            )


def evaluate(
    program: Program[Any],
    models: Mapping[str, LLM],
    inputs: Sequence[Mapping[str, Any]],
    *,
    reference: str | None = None,
    gold: Sequence[pydantic.BaseModel | Mapping[str, Any]] | None = None,
    training_answers: Sequence[pydantic.BaseModel | Mapping[str, Any]] | None = None,
    adapters: Sequence[AdapterManifest] = (),
    max_tokens: int = 512,
    sampling: Sampling = GREEDY,
    rel_tol: float = DEFAULT_REL_TOL,
) -> EvalReport:
    """Compare `models` on `inputs` and score their agreement with a reference.

    Args:
        program: the program to answer.
        models: display name → model, as for `compare`.
        inputs: held-out inputs.
        reference: the name of the model in `models` whose answers are the reference.
        gold: or the right answer to each input (objects of the output model or JSON data).
        training_answers: the answers the models were trained on, for the share of values
            copied from them (see `compare`).
        adapters: manifests of the adapters among the models: checked against the
            program's task, and their loss curves go into the HTML report.
        max_tokens: the answer budget; answers cut off here count as truncated.
        sampling: how every model picks tokens (greedy by default); recorded in the report.
        rel_tol: numbers agree within this relative tolerance.

    Raises:
        UserError: both or an unknown reference, or what `check_setup` refuses.
    """
    if reference is not None and gold is not None:
        raise UserError("give a reference model or gold answers, not both")
    if reference is not None and reference not in models:
        raise UserError(f"reference {reference!r} is not among the models: {', '.join(models)}")
    check_setup(program, inputs, gold=gold, adapters=adapters)
    comparison = compare(
        program,
        models,
        inputs,
        max_tokens=max_tokens,
        sampling=sampling,
        gold=gold,
        training_answers=training_answers,
    )
    if gold is not None:
        references: list[dict[str, Any] | None] | None = [
            program.output_cls.model_validate(g).model_dump(mode="json") for g in gold
        ]
    elif reference is not None:
        references = [answer_data(program, a) for a in comparison.answers[reference]]
    else:
        references = None
    return EvalReport.build(
        program,
        comparison,
        references=references,
        reference=reference or ("gold answers" if gold is not None else None),
        reference_model=reference,
        adapters=adapters,
        model_ids={name: llm.model_id for name, llm in models.items()},
        settings={
            "max_tokens": max_tokens,
            "sampling": asdict(sampling),
            "rel_tol": rel_tol,
            **({"training_answers": len(training_answers)} if training_answers is not None else {}),
        },
    )


@dataclass
class EvalReport:
    """Everything an evaluation measured, and the settings to measure it again.

    Attributes:
        comparison: the rates and timings per model, and every answer.
        reference: what the answers are compared with (a model name or "gold answers").
        reference_model: the model whose answers are the reference, if one is.
        references: the reference answer per input as JSON data; None where the reference
            model had no valid answer (that input is left out of agreement).
        agreements: model → its agreement per input (None where there is no reference).
        answer_data: model → its answer per input as validated JSON data, or None.
        adapters: manifests of the adapters among the models.
    """

    comparison: Comparison
    schema_hash: str
    reference: str | None = None
    reference_model: str | None = None
    references: list[dict[str, Any] | None] | None = None
    agreements: dict[str, list[Agreement | None]] = field(default_factory=dict)
    answer_data: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    adapters: list[AdapterManifest] = field(default_factory=list)
    model_ids: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=lambda: _versions())

    @classmethod
    def build(
        cls,
        program: Program[Any],
        comparison: Comparison,
        *,
        references: Sequence[Mapping[str, Any] | None] | None = None,
        reference: str | None = None,
        reference_model: str | None = None,
        adapters: Sequence[AdapterManifest] = (),
        model_ids: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> EvalReport:
        """Score each model's answers in `comparison` against `references` (one per input)."""
        rel_tol = (settings or {}).get("rel_tol", DEFAULT_REL_TOL)
        refs = None
        if references is not None:
            refs = [dict(r) if r is not None else None for r in references]
        report = cls(
            comparison,
            program.schema_hash,
            reference,
            reference_model,
            refs,
            adapters=list(adapters),
            model_ids=dict(model_ids or {}),
            settings={"rel_tol": rel_tol, **(settings or {})},
        )
        for name, answers in comparison.answers.items():
            data = [answer_data(program, a) for a in answers]
            report.answer_data[name] = data
            if refs is not None and name != reference_model:
                report.agreements[name] = [
                    agreement(d, r, rel_tol=rel_tol) if r is not None else None
                    for d, r in zip(data, refs, strict=True)
                ]
        return report

    @property
    def task(self) -> str:
        return self.comparison.task

    @property
    def inputs(self) -> int:
        return self.comparison.scores[0].answers if self.comparison.scores else 0

    @property
    def scored_inputs(self) -> int:
        """Inputs with a reference answer: the ones agreement is measured on."""
        return sum(r is not None for r in self.references or ())

    def agreement(self, model: str) -> Agreement | None:
        """`model`'s agreement over all inputs with a reference; None for the reference
        itself or without a reference."""
        per_input = self.agreements.get(model)
        return combined(a for a in per_input if a is not None) if per_input is not None else None

    def content(self, model: str) -> ContentScores | None:
        """`model`'s content scores, valid-but-wrong counted against this report's
        reference (none for the reference model itself)."""
        score = next(s for s in self.comparison.scores if s.model == model)
        per_input = self.agreements.get(model)
        if score.content is None or per_input is None:
            return score.content
        valid = [a.valid for a in self.comparison.answers[model]]
        wrong, judged = valid_but_wrong(valid, per_input)
        return replace(score.content, wrong=wrong, judged=judged)

    def worst(self, model: str, limit: int = WORST_PER_MODEL) -> list[tuple[int, Agreement]]:
        """`model`'s lowest-agreement answers (input index, agreement), imperfect ones only."""
        scored = [(i, a) for i, a in enumerate(self.agreements.get(model, [])) if a is not None]
        imperfect = [(i, a) for i, a in scored if a.total.f1 < 1.0]
        return sorted(imperfect, key=lambda item: (item[1].total.f1, item[0]))[:limit]

    def headline(self) -> str:
        """One line: the task, the inputs and what agreement is measured against."""
        line = f"task {self.task}: {self.inputs} held-out inputs"
        if self.reference is None:
            return line + "; no reference, so no agreement"
        return (
            f"{line}; agreement with {self.reference} over {self.scored_inputs} inputs "
            f"with a valid reference, numbers within {self.settings['rel_tol']:g}"
        )

    def table(self) -> str:
        """One row per model: rates, agreement precision/recall/F1, content columns
        (`structune.evaluate.content`), speed."""
        content = table_columns(self.content(s.model) for s in self.comparison.scores)
        header = f"{'model':<34} {'parsed':>8} {'valid':>8} {'truncated':>9}"
        if self.reference is not None:
            header += f" {'precision':>9} {'recall':>7} {'F1':>6}"
        header += table_header(content) + f" {'s/answer':>9} {'tok/s':>7}"
        rows = [self.headline(), header, "-" * len(header)]
        for s in self.comparison.scores:
            n = s.answers
            row = (
                f"{s.model:<34} {s.parsed:>4}/{n:<3} {s.valid:>4}/{n:<3} {f'{s.truncated}/{n}':>9}"
            )
            total = self.agreement(s.model)
            if total is not None:
                c = total.total
                row += f" {c.precision:>9.3f} {c.recall:>7.3f} {c.f1:>6.3f}"
            elif self.reference is not None:
                row += f" {'reference':>9} {'':>7} {'':>6}"
            row += table_row(self.content(s.model), content)
            row += f" {s.seconds_per_answer:>9.2f} {tokens_per_s_cell(s):>7}"
            rows.append(row)
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        compared = self.comparison.to_dict()
        for score in compared["scores"]:
            total = self.agreement(score["model"])
            score["model_id"] = self.model_ids.get(score["model"])
            score["agreement"] = total.to_dict() if total is not None else None
            content = self.content(score["model"])
            score["content"] = content.to_dict() if content is not None else None
        for model, answers in compared["answers"].items():
            for answer, data, agreed in zip(
                answers,
                self.answer_data[model],
                self.agreements.get(model) or [None] * len(answers),
                strict=True,
            ):
                answer["data"] = data
                answer["agreement"] = agreed.to_dict() if agreed is not None else None
        return {
            "created": self.created,
            "task": self.task,
            "schema_hash": self.schema_hash,
            "settings": self.settings,
            "versions": self.versions,
            "reference": {
                "name": self.reference,
                "model": self.reference_model,
                "scored_inputs": self.scored_inputs,
                "answers": self.references,
            },
            "scores": compared["scores"],
            "answers": compared["answers"],
            "adapters": [m.model_dump(mode="json") for m in self.adapters],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def write_json(self, path: str | Path) -> None:
        write_atomically(path, self.to_json())

    def write_html(self, path: str | Path) -> None:
        """One self-contained HTML file: tables, bar and loss plots, worst disagreements.

        Raises:
            UserError: matplotlib is not installed (the `report` extra).
        """
        from structune.evaluate.report_html import render_html

        write_atomically(path, render_html(self))


def tokens_per_s_cell(score: ModelScore) -> str:
    return f"{score.tokens_per_s:.1f}" if score.completion_tokens else "-"


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for package in ("structune", "pydantic"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found
