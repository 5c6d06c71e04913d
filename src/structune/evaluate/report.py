"""An evaluation report: a comparison of models plus their agreement with a reference.

`evaluate` runs `compare` and scores every valid answer against a reference answer for
the same input, leaf field by leaf field (`structune.evaluate.agreement`). The reference
is either gold answers or one of the compared models (a teacher): its own row then reads
"reference", and inputs it answered invalidly are left out of every model's agreement.
Mistakes are caught before any model runs (`check_setup`): no inputs, a gold count that
is not the input count, gold lines that do not fit the schema, an adapter trained for
another task.

`EvalReport` renders as a terminal table, JSON, and one self-contained HTML file: the
numbers, per-model bars, the adapters' training loss curves and each model's worst
disagreements beside the reference. The plots are matplotlib figures written as inline
SVG with text kept as text (`svg.fonttype: none`): matplotlib gives axes, ticks and
legends for free, the SVG needs no script, font or network, and the numbers in it stay
searchable. matplotlib (the `report` extra) is imported only by `write_html`. Everything
that came from a model or an input is escaped before it reaches the HTML.
"""

from __future__ import annotations

import html
import io
import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pydantic

from structune.errors import InvalidOutput, UserError
from structune.evaluate.agreement import DEFAULT_REL_TOL, Agreement, agreement, combined
from structune.evaluate.compare import Answer, Comparison, ModelScore, compare
from structune.fileio import write_atomically
from structune.llms.base import LLM
from structune.program import Program, extract_json_object, short_validation_error
from structune.train.adapters import AdapterManifest, load_manifest

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
    adapters: Sequence[AdapterManifest] = (),
    max_tokens: int = 512,
    rel_tol: float = DEFAULT_REL_TOL,
) -> EvalReport:
    """Compare `models` on `inputs` and score their agreement with a reference.

    Args:
        program: the program to answer.
        models: display name → model, as for `compare`.
        inputs: held-out inputs.
        reference: the name of the model in `models` whose answers are the reference.
        gold: or the right answer to each input (objects of the output model or JSON data).
        adapters: manifests of the adapters among the models: checked against the
            program's task, and their loss curves go into the HTML report.
        max_tokens: the answer budget; answers cut off here count as truncated.
        rel_tol: numbers agree within this relative tolerance.

    Raises:
        UserError: both or an unknown reference, or what `check_setup` refuses.
    """
    if reference is not None and gold is not None:
        raise UserError("give a reference model or gold answers, not both")
    if reference is not None and reference not in models:
        raise UserError(f"reference {reference!r} is not among the models: {', '.join(models)}")
    check_setup(program, inputs, gold=gold, adapters=adapters)
    comparison = compare(program, models, inputs, max_tokens=max_tokens, gold=gold)
    if gold is not None:
        references: list[dict[str, Any] | None] | None = [
            program.output_cls.model_validate(g).model_dump(mode="json") for g in gold
        ]
    elif reference is not None:
        references = [_answer_data(program, a) for a in comparison.answers[reference]]
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
        settings={"max_tokens": max_tokens, "rel_tol": rel_tol},
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
            data = [_answer_data(program, a) for a in answers]
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
        """One row per model: rates, agreement precision/recall/F1, speed."""
        header = f"{'model':<34} {'parsed':>8} {'valid':>8} {'truncated':>9}"
        if self.reference is not None:
            header += f" {'precision':>9} {'recall':>7} {'F1':>6}"
        header += f" {'s/answer':>9} {'tok/s':>7}"
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
            row += f" {s.seconds_per_answer:>9.2f} {_tokens_per_s(s):>7}"
            rows.append(row)
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        compared = self.comparison.to_dict()
        for score in compared["scores"]:
            total = self.agreement(score["model"])
            score["model_id"] = self.model_ids.get(score["model"])
            score["agreement"] = total.to_dict() if total is not None else None
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
        write_atomically(path, render_html(self))


def require_matplotlib() -> None:
    """Check that the HTML report can be drawn, before hours of model runs and not after.

    Raises:
        UserError: matplotlib is not installed; the message says how to install it.
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UserError(
            "the HTML report draws its plots with matplotlib, which is not installed; "
            "install it with: pip install 'structune[report]'"
        )


def render_html(report: EvalReport) -> str:
    """The report as one HTML page with inline SVG plots and no scripts."""
    plots = _Plots()
    sections = [
        f"<h1>structune eval: {_e(report.task)}</h1>",
        f"<p class=lead>{_e(report.headline())}</p>",
        _scores_html(report),
        "<h2>Per model</h2>",
        plots.bars(report),
        _adapters_html(report, plots),
        _fields_html(report),
        _disagreements_html(report),
        _settings_html(report),
    ]
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>structune eval: {_e(report.task)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .7rem;text-align:right}
th:first-child,td:first-child{text-align:left}
.lead{color:#555} .plot svg{max-width:100%;height:auto}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;max-height:24rem;white-space:pre-wrap}
.case{border-top:2px solid #eee;padding-top:.5rem;margin-bottom:1.5rem}
.miss{color:#a33}
"""


def _scores_html(report: EvalReport) -> str:
    agreed = report.reference is not None
    head = ["model", "parsed", "schema-valid", "truncated"]
    head += ["precision", "recall", "F1"] if agreed else []
    head += ["s / answer", "tokens / s"]
    rows = []
    for s in report.comparison.scores:
        n = s.answers
        cells = [s.model, f"{s.parsed}/{n}", f"{s.valid}/{n}", f"{s.truncated}/{n}"]
        total = report.agreement(s.model)
        if total is not None:
            c = total.total
            cells += [f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}"]
        elif agreed:
            cells += ["reference", "", ""]
        cells += [f"{s.seconds_per_answer:.2f}", _tokens_per_s(s)]
        rows.append(cells)
    return "<h2>Scores</h2>" + _table(head, rows)


def _fields_html(report: EvalReport) -> str:
    totals = {m: report.agreement(m) for m in report.agreements}
    paths = sorted({p for t in totals.values() if t is not None for p in t.paths})
    if not paths:
        return ""
    rows = []
    for path in paths:
        cells = [path]
        for total in totals.values():
            c = total.paths.get(path) if total is not None else None
            cells.append(f"{c.f1:.3f} ({c.tp}/{c.tp + c.fn})" if c is not None else "-")
        rows.append(cells)
    return (
        "<h2>Agreement per field</h2><p>F1 per leaf path (matched / reference leaves); "
        "list items are matched as multisets.</p>" + _table(["field", *totals], rows)
    )


def _adapters_html(report: EvalReport, plots: _Plots) -> str:
    if not report.adapters:
        return "<h2>Training loss</h2><p>No adapters among the models.</p>"
    rows = [
        [
            m.id,
            m.base_model,
            m.task or "-",
            str(m.dataset_size),
            str(m.steps),
            f"{m.loss_history[0]:.3f} → {m.loss_history[-1]:.3f}" if m.loss_history else "-",
        ]
        for m in report.adapters
    ]
    head = ["adapter", "base", "task", "examples", "steps", "loss"]
    return "<h2>Training loss</h2>" + plots.losses(report.adapters) + _table(head, rows)


def _disagreements_html(report: EvalReport) -> str:
    if report.references is None:
        return ""
    parts = [
        f"<h2>Worst disagreements</h2><p>Each model's {WORST_PER_MODEL} lowest-agreement "
        f"answers beside the reference ({_e(report.reference or '')}).</p>"
    ]
    for model in report.agreements:
        worst = report.worst(model)
        if not worst:
            parts.append(f"<h3>{_e(model)}</h3><p>Agrees with the reference on every input.</p>")
            continue
        parts.append(f"<h3>{_e(model)}</h3>")
        parts += [_case_html(report, model, i, a) for i, a in worst]
    return "".join(parts)


def _case_html(report: EvalReport, model: str, index: int, agreed: Agreement) -> str:
    answer = report.comparison.answers[model][index]
    data = report.answer_data[model][index]
    c = agreed.total
    shown = json.dumps(data, indent=2, ensure_ascii=False) if data is not None else answer.text
    why = ""
    if data is None:
        cut = "cut off at max_tokens; " if answer.truncated else ""
        why = f"<p class=miss>{cut}no valid answer: {_e(answer.error or '')}</p>"
    misses = [
        f"{_e(path)}: {p.tp} matched, {p.fp} extra, {p.fn} missed"
        for path, p in agreed.paths.items()
        if p.fp or p.fn
    ]
    reference = json.dumps((report.references or [])[index], indent=2, ensure_ascii=False)
    return (
        f"<div class=case><p>input {index + 1}: <code>{_e(_clip(json.dumps(answer.inputs)))}"
        f"</code> · F1 {c.f1:.3f} (precision {c.precision:.3f}, recall {c.recall:.3f})</p>"
        f"<p class=miss>{'; '.join(misses)}</p>{why}<div class=pair>"
        f"<div><b>{_e(model)}</b><pre>{_e(_clip(shown, 4000))}</pre></div>"
        f"<div><b>reference</b><pre>{_e(reference)}</pre></div></div></div>"
    )


def _settings_html(report: EvalReport) -> str:
    rows = [
        ["created", report.created],
        ["schema hash", report.schema_hash],
        *([k, str(v)] for k, v in report.settings.items()),
        *([f"model {name}", model_id] for name, model_id in report.model_ids.items()),
        *([f"version of {k}", v] for k, v in report.versions.items()),
    ]
    return "<h2>Settings</h2>" + _table(["setting", "value"], rows)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


class _Plots:
    """matplotlib figures as inline SVG; imported here, so only reports pay for it."""

    def __init__(self) -> None:
        require_matplotlib()
        import matplotlib
        from matplotlib.figure import Figure

        self._figure = Figure
        self._rc_context = matplotlib.rc_context

    def _style(self) -> Any:
        # Text stays text (searchable, small); `$` in a model name is not mathtext;
        # a fixed hash salt and no date make the same report give the same bytes.
        return self._rc_context(
            {"svg.fonttype": "none", "text.parse_math": False, "svg.hashsalt": "structune"}
        )

    def bars(self, report: EvalReport) -> str:
        scores = report.comparison.scores
        names = [s.model for s in scores]
        # (title, value per model, whether it is a share between 0 and 1)
        metrics: list[tuple[str, list[float | None], bool]] = [
            ("schema-valid rate", [s.valid_rate for s in scores], True),
            ("truncation rate", [s.truncated / s.answers for s in scores], True),
            ("seconds per answer", [s.seconds_per_answer for s in scores], False),
        ]
        if report.reference is not None:
            f1 = [_f1(report.agreement(name)) for name in names]
            metrics.insert(2, ("agreement F1", f1, True))
        with self._style():
            fig = self._figure(figsize=(2.8 * len(metrics), 0.9 + 0.45 * len(names)))
            axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
            for ax, (title, values, is_rate) in zip(axes, metrics, strict=True):
                rows = range(len(names))
                ax.barh(rows, [v or 0.0 for v in values], color="#4c78a8")
                ax.set_title(title, fontsize=10)
                ax.set_yticks(rows, names)
                top = max((v or 0.0 for v in values), default=0.0)
                # room on the right for the value labels
                ax.set_xlim(0, 1.25 if is_rate else (top * 1.35 or 1.0))
                if is_rate:
                    ax.set_xticks([0, 0.5, 1])
                for row, v in zip(rows, values, strict=True):
                    label = "reference" if v is None else f"{v:.2f}" if is_rate else f"{v:.3g}"
                    ax.text(v or 0.0, row, f" {label}", va="center", fontsize=8)
            axes[0].invert_yaxis()  # the axes share y: inverting one inverts all
            fig.set_layout_engine("constrained")
            return self._svg(fig)

    def losses(self, adapters: Sequence[AdapterManifest]) -> str:
        with self._style():
            fig = self._figure(figsize=(8, 3.2))
            ax = fig.subplots()
            for m in adapters:
                ax.plot(range(1, len(m.loss_history) + 1), m.loss_history, label=m.id)
            ax.set_xlabel("training step")
            ax.set_ylabel("loss")
            ax.legend(fontsize=8)
            fig.set_layout_engine("constrained")
            return self._svg(fig)

    def _svg(self, fig: Any) -> str:
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
        text = out.getvalue()
        # drop the XML declaration and doctype: the <svg> element goes inline in the page
        return f"<div class=plot>{text[text.index('<svg') :]}</div>"


def _answer_data(program: Program[Any], answer: Answer) -> dict[str, Any] | None:
    """The answer as JSON data validated by the output model, or None when it is not one
    (values not copied from the source still count: agreement judges them)."""
    if not answer.parsed:
        return None
    try:
        data = extract_json_object(answer.text)
        return program.output_cls.model_validate(data).model_dump(mode="json")
    except (InvalidOutput, pydantic.ValidationError):
        return None


def _f1(total: Agreement | None) -> float | None:
    return total.total.f1 if total is not None else None


def _tokens_per_s(score: ModelScore) -> str:
    return f"{score.tokens_per_s:.1f}" if score.completion_tokens else "-"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for package in ("structune", "pydantic"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found
