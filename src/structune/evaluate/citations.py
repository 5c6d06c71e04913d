"""Citation extraction scored on top of a comparison: how many of the (first author, year)
pairs in each retrieved context a model's answer names, and how many it invents.

The gold pairs are what the rule-based extractor finds in the context the model was given
(`pairs_in_context`); an answer that does not validate against `Response` counts as naming
none. Answers are read by the schema alone, so a comparison run with
`sourced_citation_program` scores an invented author as a false positive, not as nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from difflib import SequenceMatcher

from structune.errors import InvalidOutput
from structune.evaluate.compare import Comparison
from structune.tasks.citations import (
    CitationPair,
    CitationScore,
    Response,
    author_key,
    citation_pairs,
    citation_program,
    clean_text,
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
    return {
        model: [
            {"context": i, "missed": sorted(want - got), "not cited": sorted(got - want)}
            for i, (got, want, _) in enumerate(rows)
            if got != want
        ]
        for model, rows in _named_and_gold(comparison, inputs).items()
    }


# Why a named pair is wrong, tried in this order: the second author of a cited work
# ("Liang" of "Li & Liang (2021)"), a cited author with another year, a near copy of a
# missed author of that year ("Rebbuffi" for "Rebuffi"), another word of the context
# ("E2E", "We"), or a name the context does not hold.
WRONG_KINDS = ("co-author", "wrong year", "misspelled", "other word", "invented")
# Why a gold pair is missed where no misspelled copy stands for it: the answer did not
# parse, or it left the pair out.
MISSED_KINDS = ("unparseable", "dropped")
_CO_AUTHOR = re.compile(r"(?:&|\band)\s+([^\W\d_][\w'\u2019-]*)")
_WORD = re.compile(r"[^\W_][\w'\u2019-]*")
_NEAR_COPY = 0.75  # difflib ratio: "granedyck"/"grasedyck" 0.89, "samm"/"gliwa" 0.22


def citation_errors(
    comparison: Comparison, inputs: Sequence[Mapping[str, str]]
) -> dict[str, Counter[str]]:
    """Per model of `comparison`, its wrong and missed pairs (as `citation_misses` lists
    them) counted by kind, `WRONG_KINDS` and `MISSED_KINDS`: which mistakes a recipe
    makes, beyond how many."""
    errors: dict[str, Counter[str]] = {}
    for model, rows in _named_and_gold(comparison, inputs).items():
        counts: Counter[str] = Counter()
        for (got, want, parsed), given in zip(rows, inputs, strict=True):
            counts.update(_error_kinds(clean_text(given["context_str"]), got, want, parsed))
        errors[model] = counts
    return errors


def _error_kinds(
    context: str, got: set[CitationPair], want: set[CitationPair], parsed: bool
) -> Iterator[str]:
    missed = want - got
    co_authors = {author_key(name) for name in _CO_AUTHOR.findall(context)}
    words = {author_key(word) for word in _WORD.findall(context)}
    for author, year in sorted(got - want):
        near = [
            pair
            for pair in sorted(missed)
            if pair[1] == year and SequenceMatcher(None, author, pair[0]).ratio() >= _NEAR_COPY
        ]
        if author in co_authors and any(y == year for _, y in want):
            yield "co-author"
        elif any(a == author for a, _ in want):
            yield "wrong year"
        elif near:
            missed.discard(near[0])  # the copy stands for it: one mistake, not two
            yield "misspelled"
        elif author in words:
            yield "other word"
        else:
            yield "invented"
    yield from ["dropped" if parsed else "unparseable"] * len(missed)


def _named_and_gold(
    comparison: Comparison, inputs: Sequence[Mapping[str, str]]
) -> dict[str, list[tuple[set[CitationPair], set[CitationPair], bool]]]:
    """Per model, for each input: the pairs its answer names (none where it does not
    parse), the context's gold pairs, and whether the answer parsed."""
    gold = [pairs_in_context(i["context_str"]) for i in inputs]
    found = {}
    for model, answers in comparison.answers.items():
        responses = [_citations(a.text) if a.parsed else None for a in answers]
        found[model] = [
            (citation_pairs(response), want, response is not None)
            for response, want in zip(responses, gold, strict=True)
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
