"""The notebook's citation task: retrieved paper text in, the author-year citations out.

`citation_program` asks for a `Response` in LlamaIndex's default text-QA prompt, as the
notebook's query engine did. Where no GPT-4 is configured, `citation_teacher` answers it
with `extract_citations`, a deterministic reader of author-year citations: it repairs what
PDF text extraction breaks (ligatures, spacing accents, words hyphenated across lines),
then finds three forms, each anchored on a year so that ordinary parentheses never count:
parenthetical ("(Brown et al., 2020; Rae et al., 2021)", also in brackets), narrative
("Christiano et al. (2017)", "Li & Liang (2021)") and bare "Wu et al., 2021" (a citation
whose opening parenthesis fell in another chunk). A candidate first author must look like a
surname, not an acronym, a month or a word such as "Table".

Scoring compares (first author, year) pairs under `author_key`, a forgiving key: a model
may answer "Ouyang", "Ouyang et al." or "L. Ouyang" for the same citation.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import pydantic
from pydantic import Field

from structune.constrain.extractive import Extracted
from structune.errors import UserError
from structune.messages import Message
from structune.program import FORMAT_INSTRUCTIONS, Program


class Citation(pydantic.BaseModel):
    """Citation class."""

    author: str = Field(..., description="Inferred first author (usually last name")
    year: int = Field(..., description="Inferred year")
    desc: str = Field(
        ...,
        description=("Inferred description from the text of the work that the author is cited for"),
    )


class Response(pydantic.BaseModel):
    """List of author citations. Extracted over unstructured text."""

    citations: list[Citation] = Field(
        ...,
        description=("List of author citations (organized by author, year, and description)."),
    )


# LlamaIndex's DEFAULT_TEXT_QA_PROMPT_TMPL, word for word.
CONTEXT_MARKER = "---------------------"
PROMPT_TEMPLATE = (
    "Context information is below.\n"
    f"{CONTEXT_MARKER}\n"
    "{context_str}\n"
    f"{CONTEXT_MARKER}\n"
    "Given the context information and not prior knowledge, answer the query.\n"
    "Query: {query_str}\n"
    "Answer: "
)

citation_program: Program[Response] = Program(PROMPT_TEMPLATE, Response, name="citations")


MAX_DESC_CHARS = 300
"""A citing clause longer than this (PDF text without full stops) is cut around the
citation, so one answer stays a few hundred tokens."""

AuthorStyle = Literal["first", "as cited"]
"""How the teacher writes a citation's `author`: the first author's surname ("Li"), the
notebook's "Inferred first author (usually last name", or the authors as the citation
writes them ("Li & Liang"): one span to copy, where a student given the surname alone
also named the co-author as a work of its own (docs/citation-student.md)."""
AUTHOR_STYLES: tuple[str, ...] = get_args(AuthorStyle)

YEARS = (1800, 2099)
"""The years the teacher reads as years (`_YEAR`): a citation's year lies between them."""


# --- text repair ------------------------------------------------------------------------

# pymupdf writes "Rücklé" as "R\u00a8uckl\u00b4e": a spacing accent before its letter.
_SPACING_ACCENTS = {
    "\u00a8": "\u0308",  # diaeresis
    "\u00b4": "\u0301",  # acute
    "\u02c6": "\u0302",  # circumflex
    "\u02dc": "\u0303",  # tilde
    "\u02c7": "\u030c",  # caron
    "\u02da": "\u030a",  # ring
}
_LOOSE_ACCENT = re.compile(f"([{''.join(_SPACING_ACCENTS)}])([A-Za-z\u0131])")
# "Rebufﬁet al.": a ligature at the end of a surname swallows the space after it.
_LIGATURE_GLUED = re.compile(r"([\ufb00-\ufb06])(?=et al\b)")
_LINE_HYPHEN = re.compile(r"([^\W\d_])[-\u00ad]\s*\n\s*([^\W\d_])")
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """PDF-extracted text as one line: accents and ligatures repaired, line-break
    hyphenation undone ("Rad-\\nford" → "Radford", but "Allen-\\nZhu" → "Allen-Zhu")."""
    text = _LOOSE_ACCENT.sub(
        lambda m: m.group(2).replace("\u0131", "i") + _SPACING_ACCENTS[m.group(1)], text
    )
    text = _LIGATURE_GLUED.sub(r"\1 ", text)
    text = unicodedata.normalize("NFKC", text)
    text = _LINE_HYPHEN.sub(
        lambda m: m.group(1) + ("" if m.group(2).islower() else "-") + m.group(2), text
    )
    return _WHITESPACE.sub(" ", text.replace("\u00ad", "")).strip()


# --- citation patterns ------------------------------------------------------------------

# `re` has no \p{Lu}: list the capitals of the Latin, Greek and Cyrillic blocks instead.
_UPPER = "".join(c for c in map(chr, range(0x530)) if c.isupper())
_LETTER = r"[^\W\d_]"
_APOSTROPHES = "'\u2019"
_NAME = rf"[{_UPPER}]{_LETTER}*(?:[-{_APOSTROPHES}]{_LETTER}+)*"
_PARTICLE = r"(?i:van|von|der|den|de|del|della|di|da|dos|das|du|le|la|ter|ten)\s+"
_SURNAME = rf"(?<![\w{_APOSTROPHES}-])(?:{_PARTICLE}){{0,3}}{_NAME}"
_ET_AL = r"\s+et\s*al\b\.?"
_AUTHORS = (
    rf"(?P<authors>(?P<first>{_SURNAME})"
    rf"(?:{_ET_AL}|(?:\s*,\s*{_SURNAME}){{0,5}}\s*,?\s+(?:and|&)\s+{_SURNAME})?)"
)
_YEAR = r"(?:1[89]|20)\d\d[a-z]?(?!\w)"
_YEARS = rf"(?P<years>{_YEAR}(?:\s*,\s*(?:{_YEAR}|[a-z]\b))*)"

# Inside one (...) or [...] group: "Smith et al., 2020" wherever it stands in the group.
_IN_GROUP = re.compile(rf"{_AUTHORS},?\s+{_YEARS}(?=\s*(?:[;,]|$))")
_GROUP = re.compile(r"\(([^()]{1,2000})\)|\[([^\[\]]{1,2000})\]")
# "Christiano et al. (2017)", "Li & Liang [2021; see also ...]".
_NARRATIVE = re.compile(rf"{_AUTHORS}\s*[(\[]\s*{_YEARS}\s*(?:[;,][^()\[\]]*)?[)\]]")
# "Wu et al., 2021" with no parenthesis around it in this text.
_BARE = re.compile(rf"(?P<authors>(?P<first>{_SURNAME}){_ET_AL}),?\s+{_YEARS}")

_NOT_SURNAMES = frozenset({
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "spring", "summer", "autumn", "fall", "winter",
    "table", "tables", "figure", "figures", "fig", "section", "sections", "sec", "appendix",
    "chapter", "part", "eq", "equation", "algorithm", "step", "stage", "page", "pages",
    "version", "vol", "volume", "no", "number", "line", "lines", "year", "years",
    "in", "on", "at", "see", "since", "from", "until", "before", "after", "during", "the",
    "and", "or", "of", "for", "by", "with", "as", "also",
    "model", "models", "data", "dataset", "datasets", "task", "tasks", "example", "examples",
    "note", "notes", "release",
})  # fmt: skip


# What `_looks_like_surname` keeps of `_SURNAME`, as one expression for a whole value: the
# shape of the teacher's authors ("van der Maaten", "O'Neil"; not "SAMSum", "E2E", "E" or
# "Table", which a grammar over the context would otherwise offer), for `sourced_program`.
SURNAME_PATTERN = (
    rf"(?:{_PARTICLE}){{0,3}}(?=\S\S)(?!\S*[{_UPPER}]{{2}})"
    rf"(?!(?i:{'|'.join(sorted(_NOT_SURNAMES))})$){_NAME}"
)


def _looks_like_surname(surname: str) -> bool:
    """A capitalized word, not an acronym or a CamelCase model name ("BERT", "DeBERTa")."""
    name = surname.split()[-1]
    return (
        len(name) > 1
        and name.casefold() not in _NOT_SURNAMES
        and not re.search(rf"[{_UPPER}]{{2}}", name)
    )


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    author: str
    year: int
    cited_as: str  # the authors as the citation writes them: "Li & Liang", "Ouyang et al."


def _matches(pattern: re.Pattern[str], text: str, offset: int = 0) -> Iterator[_Found]:
    """Every citation `pattern` finds in `text`; a match whose first author is no surname
    is dropped and the search goes on right after that word, so "BERT and Smith (2020)"
    still yields Smith."""
    position = 0
    while (match := pattern.search(text, position)) is not None:
        author = match.group("first")
        if not _looks_like_surname(author):
            position = match.end("first")
            continue
        for year in dict.fromkeys(int(y) for y in re.findall(r"\d{4}", match.group("years"))):
            yield _Found(
                offset + match.start(), offset + match.end(), author, year, match.group("authors")
            )
        position = match.end()


def _find(text: str) -> list[_Found]:
    found = [*_matches(_NARRATIVE, text), *_matches(_BARE, text)]
    for group in _GROUP.finditer(text):
        inner = 1 if group.group(1) is not None else 2
        found.extend(_matches(_IN_GROUP, group.group(inner), group.start(inner)))
    return sorted(found, key=lambda f: f.start)


# --- citing clauses ----------------------------------------------------------------------

_SENTENCE_END = re.compile(
    r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bcf)(?<!\bvs)(?<!\bFig)(?<!\bEq)(?<!\bSec)"
    r"(?<!\bresp)(?<!\bpp)(?<!\bNo)(?<!\b[A-Z])"
    rf"[.!?][\"\u201d\u2019)\]]*\s+(?=[{_UPPER}\d\"\u201c(\[])"
)


def _clause(text: str, starts: list[int], found: _Found) -> str:
    """The clause of the citing sentence that holds `found`: the sentence split at the
    commas and semicolons outside brackets ("Winogender (Rudinger et al., 2018)" of a
    sentence listing thirteen benchmarks). A clause says what the work is cited for, and a
    list of citations from one sentence no longer repeats that sentence once per citation
    (docs/citation-student.md has the answer lengths before and after). A clause longer than
    `MAX_DESC_CHARS` (PDF text without full stops) is cut (`_cut`)."""
    begin = starts[bisect.bisect_right(starts, found.start) - 1]
    after = bisect.bisect_left(starts, found.end)
    end = starts[after] if after < len(starts) else len(text)
    cuts, groups, depth, opened = [begin], [], 0, begin
    for i in range(begin, end):
        if text[i] in "([":
            depth += 1
            opened = i if depth == 1 else opened
        elif text[i] in ")]" and depth:
            depth -= 1
            if depth == 0:
                groups.append((opened, i + 1))
        elif text[i] in ",;" and depth == 0 and text[i + 1 : i + 2] == " ":
            cuts.append(i + 1)
    begin = cuts[bisect.bisect_right(cuts, found.start) - 1]
    end = next((cut for cut in cuts if cut >= found.end), end)
    if end - begin <= MAX_DESC_CHARS:
        return text[begin:end].strip().rstrip(",;")
    inside = next((i for i, (o, c) in enumerate(groups) if o < found.start < c), None)
    if inside is None:
        return _cut(text, begin, end, found, None)
    # The words leading into a group start after the group before it, if any.
    lead = max(begin, groups[inside - 1][1] if inside else begin)
    return _cut(text, lead, end, found, groups[inside])


def _cut(text: str, begin: int, end: int, found: _Found, group: tuple[int, int] | None) -> str:
    """At most `MAX_DESC_CHARS` of the clause `text[begin:end]`. A citation inside a
    bracketed group gets the words that lead into the group (from `begin`) and the whole
    group ("adding adapter layers (Houlsby et al., 2019; Rebuffi et al., 2017; ...)"): what
    its works are cited for, and one desc shared by the whole group, where a window around
    each citation would give every work of a long group a slightly shifted copy of the same
    words (a student copying those lost its place in lora's list of ten works and ran out
    of tokens). Any other citation gets a window around it."""
    if group is not None and group[1] - group[0] < MAX_DESC_CHARS:
        end = group[1]
        begin = max(begin, end - MAX_DESC_CHARS)
    else:
        middle = (found.start + found.end) // 2
        begin = max(begin, middle - MAX_DESC_CHARS // 2)
        end = min(end, begin + MAX_DESC_CHARS)
        begin = max(begin, end - MAX_DESC_CHARS)
    window = text[begin:end]
    if begin > 0 and text[begin - 1] != " ":
        window = window.partition(" ")[2]  # no half word at either end
    if end < len(text) and text[end] not in " ,;.)]":
        window = window.rpartition(" ")[0]
    return window.strip().rstrip(",;")


def extract_citations(text: str, *, authors: AuthorStyle = "first") -> Response:
    """The author-year citations in `text`, in order of first appearance.

    `author` is the first author's surname as written (after PDF repairs), or with
    `authors="as cited"` the authors as the citation writes them ("Li & Liang", "Ouyang et
    al."; `author_key` reads both as "li", "ouyang"). `year` drops any "a"/"b" suffix,
    `desc` is the citing clause (`_clause`). The same first author and year cited again (in
    any form) is kept once, at its first occurrence.

    Raises:
        UserError: `authors` is neither "first" nor "as cited".
    """
    if authors not in AUTHOR_STYLES:
        raise UserError(f"authors must be one of {AUTHOR_STYLES}, got {authors!r}")
    text = clean_text(text)
    starts = [0, *(m.end() for m in _SENTENCE_END.finditer(text))]
    citations: dict[tuple[str, int], Citation] = {}
    for found in _find(text):
        key = (author_key(found.author), found.year)
        if key not in citations:
            desc = _clause(text, starts, found)
            author = found.cited_as if authors == "as cited" else found.author
            citations[key] = Citation(author=author, year=found.year, desc=desc)
    return Response(citations=list(citations.values()))


# --- the sourced program ----------------------------------------------------------------


def _sourced_response(author_pattern: str | None, desc_first: bool) -> type[pydantic.BaseModel]:
    """`Response` whose citations' `author` and `year` must be copied from the retrieved
    context, the citations in the order their authors appear in it (the teacher's order:
    first appearance), each author matching `author_pattern` if one is given.

    Same class names and fields; bounds where the teacher has them: a year in `YEARS`,
    a `desc` of at most `MAX_DESC_CHARS`. Under a grammar the bounds do the most good: a
    chunk without a number in `YEARS` admits only `[]` (page, table and figure numbers are
    not years), and a `desc` the model cannot end (it wrote a curly quote for the closing one)
    ends at the limit. The prompt shows the schema without markers: `citation_program`'s
    with those bounds added. With `desc_first`, each citation's fields are declared (so
    shown, recorded, trained and decoded) in the order desc, author, year.
    """

    # `create_model`, not class bodies: the fields' order is a parameter here, and with
    # postponed annotations a class body would look `author_pattern` up in the module.
    fields: dict[str, Any] = {
        "author": (
            Annotated[str, Extracted(source="context_str", ordered=True, pattern=author_pattern)],
            Field(..., description="Inferred first author (usually last name"),
        ),
        "year": (
            Annotated[int, Extracted(source="context_str")],
            Field(..., description="Inferred year", ge=YEARS[0], le=YEARS[1]),
        ),
        "desc": (
            str,
            Field(
                ...,
                max_length=MAX_DESC_CHARS,
                description=(
                    "Inferred description from the text of the work that the author is cited for"
                ),
            ),
        ),
    }
    order = ("desc", "author", "year") if desc_first else ("author", "year", "desc")
    citation = pydantic.create_model(
        "Citation", __doc__="Citation class.", **{name: fields[name] for name in order}
    )
    return pydantic.create_model(
        "Response",
        __doc__="List of author citations. Extracted over unstructured text.",
        citations=(
            list[citation],  # type: ignore[valid-type]
            Field(
                ...,
                description=(
                    "List of author citations (organized by author, year, and description)."
                ),
            ),
        ),
    )


def sourced_program(
    author_pattern: str | None = None, *, desc_first: bool = False
) -> Program[pydantic.BaseModel]:
    """`citation_program` with each author and year checked against, and under a grammar
    copied from, the retrieved context, in its order (`Constrained(llm,
    extraction="unordered")` drops the order; `desc` stays free text, up to
    `MAX_DESC_CHARS`: the teacher writes the citing clause from repaired text, which differs
    from the raw context where PDF extraction broke words).

    `author_pattern` (e.g. `SURNAME_PATTERN`) also holds each author to a shape. It is off
    by default: under the grammars it cost the student F1 on the other paper
    (docs/citation-student.md, "A surname's shape"), its wrong spans becoming other
    capitalized words.

    `desc_first` puts each citation's `desc` before its author and year: a student then
    copies the citing clause first, which ends with the very author and year it writes
    next, instead of naming the next work before it has found it in the context. It is off
    by default: it helped on held-out text of the training paper but cost F1 on the other
    paper (docs/citation-student.md, "Each citation's `desc` first").
    """
    return Program(PROMPT_TEMPLATE, _sourced_response(author_pattern, desc_first), name="citations")


sourced_citation_program = sourced_program()


# --- the offline teacher ----------------------------------------------------------------

_FORMAT_START = FORMAT_INSTRUCTIONS.split("{schema}")[0].strip()
_MARKER_LINE = re.compile(rf"^{CONTEXT_MARKER}[ \t]*$", re.MULTILINE)


# LlamaIndex writes each chunk's metadata before its text ("file_name: x.pdf\ntitle: x\n\n")
# and joins chunks with a blank line: snake_case keys, at the start or after a blank line,
# so that a caption such as "Table 1: ..." is never taken for one.
_METADATA_HEADER = re.compile(r"(?:\A|(?<=\n\n))(?:[a-z_]+: [^\n]*\n)+\n")


def context_of(prompt: str) -> str:
    """The retrieved context in a text-QA prompt: between the first and the last marker
    line; without markers, the whole prompt less any JSON-schema format instructions. The
    chunks' metadata headers are not text of the paper (one would open the first citing
    sentence) and are left out."""
    markers = list(_MARKER_LINE.finditer(prompt))
    if len(markers) >= 2:
        context = prompt[markers[0].end() : markers[-1].start()].strip("\n")
    else:
        context = prompt.split(_FORMAT_START)[0].strip()
    return _METADATA_HEADER.sub("", context)


def citation_teacher(messages: Sequence[Message], *, authors: AuthorStyle = "first") -> str:
    """Answer `citation_program` as the GPT-4 teacher would, from the rules above, each
    `author` written as `authors` says (`extract_citations`).

    Wrap it to record examples: `CallableLLM(citation_teacher, model_id="rules:citations")`.
    The answer is compact UTF-8 JSON (no \\u escapes), the form constrained decoding writes.

    Raises:
        UserError: the conversation has no user message.
    """
    prompts = [m["content"] for m in messages if m["role"] == "user"]
    if not prompts:
        raise UserError(
            "the citation teacher needs a user message holding the context; "
            "build the messages with citation_program.messages(...)"
        )
    return extract_citations(context_of(prompts[-1]), authors=authors).model_dump_json()


# --- scoring ----------------------------------------------------------------------------

# "et" alone is an "et al." cut short, as a student copying "Rudinger et al." may write it.
_FIRST_AUTHOR_END = re.compile(r"\s+et(?:\s*al)?\b.*|\s+(?:and|&)\s+.*|[,;].*", re.IGNORECASE)

CitationPair = tuple[str, int]


def author_key(author: str) -> str:
    """The first author's surname, reduced so that spellings of one name agree.

    Case, accents, ligatures, "et al." and co-authors are ignored, and so are first names,
    initials and particles: the key is the last word, letters only. "L. Ouyang",
    "Ouyang et al." and "ouyang" all give "ouyang"; "van der Maaten" gives "maaten",
    "Allen-Zhu" gives "allenzhu", "Rücklé" gives "ruckle", and so does pymupdf's
    spelling of it with spacing accents (left alone, NFKC would split it at each accent).
    """
    name = _FIRST_AUTHOR_END.sub("", clean_text(author))
    name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    words = [w for w in re.split(r"[\s.]+", name.casefold()) if any(c.isalpha() for c in w)]
    return "".join(c for c in words[-1] if c.isalpha()) if words else ""


def citation_pairs(response: Response | None) -> set[CitationPair]:
    """The (author key, year) pairs of an answer; none for an unparseable answer (None)."""
    if response is None:
        return set()
    return {(author_key(c.author), c.year) for c in response.citations if author_key(c.author)}


def pairs_in_context(context: str) -> set[CitationPair]:
    """The gold pairs for a retrieved context: the citations the rules find in it."""
    return citation_pairs(extract_citations(context))


@dataclass(frozen=True)
class CitationScore:
    """Micro-averaged agreement of predicted and gold (author, year) pairs.

    An empty denominator scores 1.0 only when both sides are empty (nothing to find,
    nothing claimed), otherwise 0.0.

    Attributes:
        precision: true positives over predicted pairs.
        recall: true positives over gold pairs.
        f1: harmonic mean of precision and recall.
        n: examples scored.
        true_positives: predicted pairs that are gold.
        predicted: predicted pairs, over all examples.
        gold: gold pairs, over all examples.
        unparseable: predictions that were None (counted as no pairs).
    """

    precision: float
    recall: float
    f1: float
    n: int
    true_positives: int
    predicted: int
    gold: int
    unparseable: int


def score_citations(
    predicted: Sequence[Response | None], gold: Sequence[set[CitationPair]]
) -> CitationScore:
    """Score answers against gold pairs (e.g. from `pairs_in_context`), example by example.

    Gold authors go through `author_key` too, so hand-written gold such as
    `{("Ouyang", 2022)}` works.

    Raises:
        UserError: the two lists differ in length.
    """
    if len(predicted) != len(gold):
        raise UserError(
            f"got {len(predicted)} predictions for {len(gold)} gold sets; "
            "pass one prediction (or None) per example"
        )
    true_positives = n_predicted = n_gold = 0
    for response, pairs in zip(predicted, gold, strict=True):
        guessed = citation_pairs(response)
        expected = {(author_key(author), year) for author, year in pairs}
        true_positives += len(guessed & expected)
        n_predicted += len(guessed)
        n_gold += len(expected)
    both_empty = n_predicted == n_gold == 0
    precision = true_positives / n_predicted if n_predicted else float(both_empty)
    recall = true_positives / n_gold if n_gold else float(both_empty)
    total = precision + recall
    return CitationScore(
        precision=precision,
        recall=recall,
        f1=2 * precision * recall / total if total else 0.0,
        n=len(gold),
        true_positives=true_positives,
        predicted=n_predicted,
        gold=n_gold,
        unparseable=sum(response is None for response in predicted),
    )
