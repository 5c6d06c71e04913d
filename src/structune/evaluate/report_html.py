"""The HTML page of an `EvalReport`: one self-contained file, no script, font or network.

Sections: the scores table, bars of the rates, the content of the valid answers (bars and
the most common value per field), the adapters' loss curves, agreement per field, each
model's worst disagreements beside the reference, and the settings. Everything that came
from a model or an input is escaped before it reaches the HTML.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Sequence

from structune.evaluate.agreement import Agreement
from structune.evaluate.content import ContentScores, TopValue, table_cells, table_columns
from structune.evaluate.plots import Bars, Plots
from structune.evaluate.report import WORST_PER_MODEL, EvalReport, tokens_per_s_cell


def render_html(report: EvalReport) -> str:
    """The report as one HTML page with inline SVG plots and no scripts."""
    plots = Plots()
    sections = [
        f"<h1>structune eval: {_e(report.task)}</h1>",
        f"<p class=lead>{_e(report.headline())}</p>",
        _scores_html(report),
        "<h2>Per model</h2>",
        plots.bars([s.model for s in report.comparison.scores], _rate_bars(report)),
        _content_html(report, plots),
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
th,td{border-bottom:1px solid #ddd;padding:.3rem .45rem;text-align:right}
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
    content = table_columns(report.content(s.model) for s in report.comparison.scores)
    head += [*content, "s / answer", "tokens / s"]
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
        cells += table_cells(report.content(s.model), content)
        cells += [f"{s.seconds_per_answer:.2f}", tokens_per_s_cell(s)]
        rows.append(cells)
    return "<h2>Scores</h2>" + _table(head, rows)


def _rate_bars(report: EvalReport) -> list[Bars]:
    scores = report.comparison.scores
    panels = [
        Bars("schema-valid rate", [s.valid_rate for s in scores]),
        Bars("truncation rate", [s.truncated / s.answers for s in scores]),
        Bars("seconds per answer", [s.seconds_per_answer for s in scores], is_rate=False),
    ]
    if report.reference is not None:
        f1 = [_f1(report.agreement(s.model)) for s in scores]
        panels.insert(2, Bars("agreement F1", f1, missing="reference"))
    return panels


def _content_html(report: EvalReport, plots: Plots) -> str:
    names = [s.model for s in report.comparison.scores]
    contents = [report.content(name) for name in names]
    if all(c is None for c in contents):
        return ""

    def values(rate: Callable[[ContentScores], float | None]) -> list[float | None]:
        return [rate(c) if c is not None else None for c in contents]

    panels = [
        Bars("all list items distinct", values(lambda c: c.all_distinct_rate)),
        Bars("distinct list items", values(lambda c: c.distinct_ratio)),
        Bars("most common value's share", values(lambda c: c.constant_share)),
        Bars("one value in two fields", values(lambda c: c.echoed_rate)),
    ]
    if any(c is not None and c.copied is not None for c in contents):
        panels.append(Bars("copied from training", values(lambda c: c.copied_rate)))
    if any(c is not None and c.judged is not None for c in contents):
        missing = "reference" if report.reference_model else "-"
        panels.insert(0, Bars("valid but wrong", values(lambda c: c.wrong_rate), missing=missing))
    paths = sorted({p for c in contents if c is not None for p in c.top_values})
    rows = [
        [path, *(_top_value(c.top_values.get(path)) if c else "-" for c in contents)]
        for path in paths
    ]
    return (
        "<h2>Content of the valid answers</h2><p>Valid is not yet good. Over each model's "
        "valid answers: <b>wrong|valid</b>, those that disagree with the reference somewhere; "
        "<b>all-distinct</b>, answers none of whose list items repeats another (exactly or "
        "nearly, once case, spaces and punctuation are set aside); <b>distinct</b>, the mean "
        "share of distinct items in an answer's lists; <b>const</b>, the largest share of "
        "one value at one field over all answers (below, per field); <b>echo</b>, answers "
        "with one value in two fields; <b>copied</b>, the share of string values found "
        "verbatim in the training answers.</p>"
        + plots.bars(names, panels)
        + "<h3>Most common value per field</h3><p>Its share of the field's values over all "
        "valid answers, and the value.</p>" + _table(["field", *names], rows)
    )


def _top_value(top: TopValue | None) -> str:
    if top is None:
        return "-"
    known = " (in training)" if top.in_training else ""
    return f"{top.share:.2f} ({top.count}/{top.total}): {_clip(str(top.value), 40)}{known}"


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


def _adapters_html(report: EvalReport, plots: Plots) -> str:
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


def _f1(total: Agreement | None) -> float | None:
    return total.total.f1 if total is not None else None


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
