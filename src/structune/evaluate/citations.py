"""Citation extraction scored on top of a comparison: how many of the (first author, year)
pairs in each retrieved context a model's answer names, and how many it invents.

The gold pairs are what the rule-based extractor finds in the context the model was given
(`pairs_in_context`); an answer that does not validate against `Response` counts as naming
none. Answers are read by the schema alone, so a comparison run with
`sourced_citation_program` scores an invented author as a false positive, not as nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from structune.errors import InvalidOutput
from structune.evaluate.compare import Comparison
from structune.tasks.citations import (
    CitationPair,
    CitationScore,
    Response,
    citation_pairs,
    citation_program,
    pairs_in_context,
    score_citations,
)


def citation_scores(
    comparison: Comparison, inputs: Sequence[Mapping[str, str]]
) -> dict[str, CitationScore]:
    """Precision / recall / F1 per model of `comparison`, which ran `inputs`."""
    gold = [pairs_in_context(i["context_str"]) for i in inputs]
    scores = {}
    for model, answers in comparison.answers.items():
        predicted = [_citations(a.text) if a.parsed else None for a in answers]
        scores[model] = score_citations(predicted, gold)
    return scores


def citation_misses(
    comparison: Comparison, inputs: Sequence[Mapping[str, str]]
) -> dict[str, list[dict[str, object]]]:
    """Per model of `comparison`, the inputs its pairs differ on (scored as in
    `citation_scores`): `{"context": i, "missed": gold pairs not named, "not cited": pairs
    named that the context does not cite}`, pairs sorted by author key."""
    gold = [pairs_in_context(i["context_str"]) for i in inputs]
    found: dict[str, list[dict[str, object]]] = {}
    for model, answers in comparison.answers.items():
        named: list[set[CitationPair]] = [
            citation_pairs(_citations(a.text) if a.parsed else None) for a in answers
        ]
        found[model] = [
            {"context": i, "missed": sorted(want - got), "not cited": sorted(got - want)}
            for i, (got, want) in enumerate(zip(named, gold, strict=True))
            if got != want
        ]
    return found


def _citations(text: str) -> Response | None:
    try:
        return citation_program.parse(text)
    except InvalidOutput:
        return None


def citation_table(comparison: Comparison, scores: Mapping[str, CitationScore]) -> str:
    """One row per model: answers valid against the notebook's `Response` ("schema-valid",
    the measure the issue's goal names) and against the comparison's program ("valid": with
    `sourced_citation_program`, also nothing invented and the context's order), cut-off
    answers, answers a grammar closed as the token budget ran out (where any was: their lists
    may end early), authors not in the context (for a program that marks them), then
    precision, recall and F1."""
    marked = any(s.marked for s in comparison.scores)
    closed = any(s.closed_early for s in comparison.scores)
    header = f"{'model':<34} {'schema-valid':>12} {'valid':>8} {'cut off':>8}"
    header += f" {'closed early':>12}" if closed else ""
    header += f" {'author not in ctx':>17}" if marked else ""
    header += f" {'P':>6} {'R':>6} {'F1':>6} {'s/ans':>7}"
    rows = [header, "-" * len(header)]
    for s in comparison.scores:
        f = scores[s.model]
        row = f"{s.model:<34} {f.n - f.unparseable:>8}/{f.n:<3} {s.valid:>4}/{s.answers:<3}"
        row += f" {s.truncated:>8}"
        row += f" {s.closed_early:>12}" if closed else ""
        row += f" {s.not_in_source:>10}/{s.marked:<6}" if marked else ""
        row += f" {f.precision:>6.2f} {f.recall:>6.2f} {f.f1:>6.2f} {s.seconds_per_answer:>7.1f}"
        rows.append(row)
    return "\n".join(rows)
