"""More citing contexts from the same text: each cited surname and year swapped for others.

A 135M student tuned on a paper's few dozen citing chunks learns those chunks, not the
skill: it answered their citations back, and `[]` to every chunk it had not seen. In a
variant of a chunk, every surname the rules cite is replaced, wherever it stands, by
another surname from the same papers, and every cited year by a random one; the teacher
then labels the variant as it would any chunk. The words around the citations stay, so
what stays the same across variants is where a citation stands and what it looks like:
what the student has to learn, instead of which names a given paragraph cites.

With `two_authors`, a share of the swapped "Smith et al." citations are written with two
authors instead, "Jones & Lee" or "Jones and Lee": instructgpt cites two authors twice in
68 pages, lora 24 times in 26 (all with "&"), and a student tuned on the first answered
"Loshchilov & Hutter" with "Hutter" or an invented name.

`long_list_variants` makes the rarer shape a student fails on: one sentence listing a dozen
works, each in its own clause ("RealToxicityPrompts (Gehman et al., 2020), TruthfulQA (Lin
et al., 2021), ..."). Plainly decoded, the best student lost its place in such a list and
looped (Gehman, Lin, Gehman, Lin, ...), and a paper's windows hold only a handful of them.

`inserted_variants` puts citations where the paper has none, in the shapes of
`INSERTED_SHAPES`, lora's narrative "Li & Liang (2021)" ending a paragraph among them.

`nested_variants` wraps a citation in a bracket of its own, "(both part of Super-GLUE (Wang
et al., 2019))": a `desc` ending in two closing brackets, where students closed the string
after the first.

`narrative_variants` writes bracketed citations narratively, "Smith et al. (2020)", a shape
lora writes about as often as a bracket and InstructGPT's windows hold a quarter as often.

`yearless_variants` writes a letter for one cited year, "(Radford et al., b)", as lora's text
does for the seven citations of its year-less references. The rules teacher, needing a
year, leaves such a citation out; a student that never saw one copied the letter as the
year, `"year":b`, and its answer was no longer JSON.

`made_up_surnames` are names no pretrained model has met, "Li"-short to four syllables long,
for the variants to swap in: a student can answer one only by copying it from its context,
where a real surname can be recalled from its first letter ("Laura" for "Li & Liang").
Measured, the student learned instead that an author can be any capitalized run of words
(docs/citation-student.md, "Made-up surnames").
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from structune.tasks.citations import Citation, extract_citations

# One-word capitalized surnames swap cleanly; "van der Berg" or "Allen-Zhu" are left as
# they are in the text, and only one-word names are drawn as replacements.
_PLAIN_SURNAME = re.compile(r"[A-Z][a-z]+")
YEARS = (1990, 2023)


def citation_variants(
    inputs: Sequence[dict[str, str]],
    *,
    per_input: int,
    two_authors: float = 0.0,
    names: Sequence[str] = (),
    seed: int = 0,
) -> list[dict[str, str]]:
    """`per_input` variants of each input whose `context_str` cites something (inputs
    without citations have none), in order; other keys are kept as they are. Each cited
    surname's "et al." citations are written as two authors in a variant with probability
    `two_authors`. New surnames are drawn from the inputs' cited ones and `names` (say a
    bibliography's, `bibliography_surnames`)."""
    rng = random.Random(seed)
    cited = [(i, extract_citations(i["context_str"]).citations) for i in inputs]
    pool = _surname_pool([c for _, found in cited for c in found], names)
    variants = []
    for given, found in cited:
        names = sorted({c.author for c in found if _PLAIN_SURNAME.fullmatch(c.author)})
        years = sorted({c.year for c in found})
        if not found or len(pool) < 2:
            continue
        for _ in range(per_input):
            # All at once: one by one, a name swapped in could be swapped again.
            new_names = {name: rng.choice([p for p in pool if p != name]) for name in names}
            new_years = {str(year): str(rng.randint(*YEARS)) for year in years}
            paired = {}  # "Smith et al." → "Jones & Lee"
            if two_authors:  # no draws otherwise: earlier recipes' variants stay as they were
                for name, new in new_names.items():
                    if rng.random() < two_authors:
                        other = rng.choice([p for p in pool if p != new])
                        paired[name] = f"{new}{rng.choice((' & ', ' and '))}{other}"
            text = given["context_str"]
            if new_names:
                text = _swap_names(text, new_names, paired)
            text = _swap(text, new_years, r"(?<!\d)(?:{})(?=[a-z]?(?!\d))")
            variants.append({**given, "context_str": text})
    return variants


# A word that names a benchmark or a model, never a surname to the rules: two capitals in a
# row ("TruthfulQA", "GPT-3", "RLHF"); it heads an added clause.
_NAME_OF_A_THING = re.compile(r"(?<![\w-])(?=[\w-]*[A-Z]{2})[A-Z][\w]*(?:-[\w]+)?(?![\w-])")
# A bracket holding one citation ("(Gehman et al., 2020)"): where a list's clause ends.
_BRACKET = re.compile(r"\([^()]{1,200}\)")


def long_list_variants(
    inputs: Sequence[dict[str, str]],
    *,
    count: int,
    lengths: tuple[int, int] = (9, 16),
    names: Sequence[str] = (),
    seed: int = 0,
) -> list[dict[str, str]]:
    """`count` variants of citing inputs drawn at random, each made to cite a number of
    works drawn from `lengths` by new clauses after one of its single citations: ", GPT-3
    (Smith et al., 2019)" and so on, each a surname from the inputs' own cited ones with a
    year, a pair the input does not cite yet (surnames drawn as `citation_variants` draws
    them). Inputs that cite `lengths[1]` works or more, or hold no bracket with a single
    citation, are not drawn; other keys are kept as they are."""
    rng = random.Random(seed)
    found = [extract_citations(i["context_str"]).citations for i in inputs]
    surnames = _surname_pool([c for f in found for c in f], names)
    heads = sorted({w for i in inputs for w in _NAME_OF_A_THING.findall(i["context_str"])})
    drawable = []
    for given, citations in zip(inputs, found, strict=True):
        singles = [
            b.end()
            for b in _BRACKET.finditer(given["context_str"])
            if len(extract_citations(b.group(0)).citations) == 1
        ]
        if singles and len(citations) < lengths[1]:
            drawable.append((given, citations, singles))
    if not drawable or len(surnames) < 2 or not heads:
        return []
    variants = []
    for given, citations, singles in (rng.choice(drawable) for _ in range(count)):
        cited = {(c.author, c.year) for c in citations}
        target = max(rng.randint(*lengths), len(citations) + 1)
        added: list[str] = []
        while len(cited) < target:
            pair = (rng.choice(surnames), rng.randint(*YEARS))
            if pair not in cited:
                cited.add(pair)
                added.append(f", {rng.choice(heads)} ({pair[0]} et al., {pair[1]})")
        at = rng.choice(singles)
        text = given["context_str"]
        variants.append({**given, "context_str": text[:at] + "".join(added) + text[at:]})
    return variants


# A capitalized word and the bracket after it that ends a clause, on one line: "Super-GLUE
# (Wang et al., 2019)." (a bracket in mid-clause, wrapped, would not end the `desc`).
_WORD_AND_BRACKET = re.compile(r"(?<![\w(-])[A-Z][\w-]* (\([^()\n]{1,200}\))(?=[,;.](?:\s|$))")
# How a wrapping bracket opens, as papers write one around a cited work.
_WRAP_OPENINGS = ("(", "(e.g., ", "(such as ", "(both part of ", "(as in ")


def nested_variants(
    inputs: Sequence[dict[str, str]], *, count: int, seed: int = 0
) -> list[dict[str, str]]:
    """`count` variants of citing inputs drawn at random, each with one of its single
    citations and the word before it wrapped in a bracket of their own: "Super-GLUE (Wang
    et al., 2019)" becomes "(both part of Super-GLUE (Wang et al., 2019))". The citing
    clause, the teacher's `desc`, then ends in two closing brackets, a shape a paper's
    windows hold a handful of times (4 of InstructGPT's training answers), and on which
    students broke their JSON by closing the `desc` after the first bracket
    ('(Wang et al., 2019)")}'). Inputs without such a citation are not drawn; other keys
    are kept as they are."""
    rng = random.Random(seed)

    def spots(text: str) -> list[tuple[int, int]]:
        return [
            m.span()
            for m in _WORD_AND_BRACKET.finditer(text)
            # one citation in the bracket itself: not the year of "Christiano (2017)"
            if len(extract_citations(m.group(1)).citations) == 1
        ]

    variants = []
    for given, (start, end) in _drawn_spots(inputs, spots, count=count, rng=rng):
        text = given["context_str"]
        wrapped = f"{rng.choice(_WRAP_OPENINGS)}{text[start:end]})"
        variants.append({**given, "context_str": text[:start] + wrapped + text[end:]})
    return variants


# A cited year, with the letter that tells a year's works apart ("2019b").
_CITED_YEAR = re.compile(r"(?<![\w-])(?:1[89]|20)\d\d[a-z]?(?![\w-])")


def yearless_variants(
    inputs: Sequence[dict[str, str]], *, count: int, seed: int = 0
) -> list[dict[str, str]]:
    """`count` variants of citing inputs drawn at random, each with one cited year written
    as a letter, "(Smith et al., a)" or "Smith et al. (b)": a citation the teacher no longer
    answers, one fewer in the variant's answer. A year is drawn only where writing it so
    drops exactly its own citation; inputs without such a year are not drawn, and other keys
    are kept as they are."""
    rng = random.Random(seed)

    def spots(text: str) -> list[tuple[int, int]]:
        found = _pairs(text)
        return [
            m.span()
            for m in _CITED_YEAR.finditer(text)
            if _drops_one(found, _pairs(_with(text, m.span(), "a")))
        ]

    variants = []
    for given, spot in _drawn_spots(inputs, spots, count=count, rng=rng):
        text = _with(given["context_str"], spot, rng.choice("ab"))
        variants.append({**given, "context_str": text})
    return variants


# A bracket of author-year citations and nothing else, "(Smith et al., 2020; Lee & Kim,
# 2019a)", and one of its citations: authors without a comma, then the year.
_CITING_BRACKET = re.compile(r"\(([^()]{1,400})\)")
_PARENTHETICAL = re.compile(r"(?P<authors>[A-Z][^,;()\d]*?),\s+(?P<year>(?:1[89]|20)\d\d[a-z]?)")


def narrative_variants(
    inputs: Sequence[dict[str, str]], *, count: int, seed: int = 0
) -> list[dict[str, str]]:
    """`count` variants of citing inputs drawn at random, with some of their bracketed
    citations, each with probability 1/2 and at least one, written narratively: "(Smith et
    al., 2020; Lee & Kim, 2019)" becomes "Smith et al. (2020); Lee & Kim (2019)", the
    teacher's answer citing the same works. Page by page, InstructGPT writes 28 narrative
    citations against 97 brackets, lora 46 against 55 (`tests/unit/test_citations.py`), and
    students tuned on the first wrote lora's narrative sentences whole as the author ("E2E
    NLG Challenge was first introduced in Novikova et al. (2017)"). Inputs without such a
    bracket are not drawn; other keys are kept as they are."""
    rng = random.Random(seed)
    drawable = []
    for given in inputs:
        text, found = given["context_str"], _pairs(given["context_str"])
        spots = [
            (m.span(), narrative)
            for m in _CITING_BRACKET.finditer(text)
            if (narrative := _narrative(m.group(1))) is not None
            and _pairs(_with(text, m.span(), narrative)) == found
        ]
        if spots:
            drawable.append((given, spots))
    variants = []
    for given, spots in (rng.choice(drawable) for _ in range(count if drawable else 0)):
        chosen = [spot for spot in spots if rng.random() < 0.5] or [rng.choice(spots)]
        text = given["context_str"]
        for span, narrative in reversed(chosen):  # from the end: earlier spans stay put
            text = _with(text, span, narrative)
        variants.append({**given, "context_str": text})
    return variants


def _narrative(bracketed: str) -> str | None:
    """ "Smith et al., 2020; Lee & Kim, 2019" as "Smith et al. (2020); Lee & Kim (2019)", or
    None where a part of it is not one author-year citation."""
    parts = [_PARENTHETICAL.fullmatch(part.strip()) for part in bracketed.split(";")]
    if not all(parts):
        return None
    return "; ".join(f"{m['authors']} ({m['year']})" for m in parts if m)


def _drawn_spots(
    inputs: Sequence[dict[str, str]],
    spots: Callable[[str], list[tuple[int, int]]],
    *,
    count: int,
    rng: random.Random,
) -> Iterator[tuple[dict[str, str], tuple[int, int]]]:
    """`count` draws of an input at random among those whose context has `spots`, each with
    one of its spots; lazily, so that a caller's own draws between them come in turn."""
    drawable = [(given, found) for given in inputs if (found := spots(given["context_str"]))]
    for given, found in (rng.choice(drawable) for _ in range(count if drawable else 0)):
        yield given, rng.choice(found)


def _drops_one(before: Counter[tuple[str, int]], after: Counter[tuple[str, int]]) -> bool:
    return sum((before - after).values()) == 1 and not after - before


def _pairs(text: str) -> Counter[tuple[str, int]]:
    return Counter((c.author, c.year) for c in extract_citations(text).citations)


def _with(text: str, span: tuple[int, int], new: str) -> str:
    return text[: span[0]] + new + text[span[1] :]


# Where a sentence ends, outside brackets: a citation goes in right before its period.
_SENTENCE_END = re.compile(r"(?<=[a-z0-9])\.(?=\s+[A-Z]|\s*$)")
# The shapes a citation is inserted in, "{a}" "{b}" "{c}" surnames and "{y}" "{z}" years:
# the forms both papers write, narrative two-author citations ending a sentence among them
# (lora's "Li & Liang (2021)", which InstructGPT's windows hardly hold). Worded in phrases
# of neither test set: a shape copied from lora's sentences would score the copy.
INSERTED_SHAPES = (
    " ({a} et al., {y})",
    " ({a} & {b}, {y})",
    " ({a} and {b}, {y})",
    " ({a} et al., {y}; {c} et al., {z})",
    " ({a} & {b}, {y}; {c} et al., {z})",
    ", as in {a} et al. ({y})",
    ", as {a} and {b} ({y}) do",
    ", building on {a} & {b} ({y})",
    ". The same holds in {a} & {b} ({y})",
    ". See {a} et al. ({y}) for details",
)


def inserted_variants(
    inputs: Sequence[dict[str, str]],
    *,
    count: int,
    names: Sequence[str] = (),
    seed: int = 0,
) -> list[dict[str, str]]:
    """`count` variants of inputs drawn at random, each with one or two citations inserted
    at the ends of its sentences, in shapes drawn from `INSERTED_SHAPES`, with surnames
    from the inputs' cited ones and `names` and years drawn as `citation_variants` draws
    them: citations where the paper put none, often at the end of a window. (Variants of
    citing windows keep where the paper's citations stand and how it writes them, and a
    student tuned on them missed lora's "Li & Liang (2021)" ending a long paragraph.)
    Inputs without a sentence end outside brackets are not drawn; other keys are kept."""
    rng = random.Random(seed)
    pool = _surname_pool(
        [c for i in inputs for c in extract_citations(i["context_str"]).citations], names
    )
    drawable = []
    for given in inputs:
        text = given["context_str"]
        ends = [
            m.start() for m in _SENTENCE_END.finditer(text) if _outside_brackets(text, m.start())
        ]
        if ends:
            drawable.append((given, ends))
    if not drawable or len(pool) < 3:
        return []
    variants = []
    for given, ends in (rng.choice(drawable) for _ in range(count)):
        text = given["context_str"]
        for at in sorted(rng.sample(ends, min(len(ends), rng.randint(1, 2))), reverse=True):
            a, b, c = rng.sample(pool, 3)
            y, z = (rng.randint(*YEARS) for _ in range(2))
            text = (
                text[:at] + rng.choice(INSERTED_SHAPES).format(a=a, b=b, c=c, y=y, z=z) + text[at:]
            )
        variants.append({**given, "context_str": text})
    return variants


def _outside_brackets(text: str, at: int) -> bool:
    before = text[:at]
    return before.count("(") <= before.count(")") and before.count("[") <= before.count("]")


# Syllables of made-up names: an onset, a vowel and sometimes a closing consonant, so that
# names range from "Li" and "Wu" to "Brandokel"; the tokenizer cuts them into unusual pieces.
_ONSETS: tuple[str, ...] = ("b", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r")
_ONSETS += ("s", "sh", "t", "v", "w", "x", "y", "z", "br", "kr", "st", "tr", "zh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ao", "ei", "ia", "ou", "ua", "ue")
_CODAS = ("", "", "", "n", "ng", "r", "l", "s", "k", "m", "t")
# Words the rules read as a particle of a surname ("van der Berg"), not as one.
_PARTICLES = {"van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das"}
_PARTICLES |= {"du", "le", "la", "ter", "ten"}


def made_up_surnames(count: int, *, seed: int = 0) -> list[str]:
    """`count` distinct made-up one-word surnames, sorted: one to four syllables, a fifth
    of them a single short one ("Li", "Wu", "Shao") as lora's Chinese surnames are. For
    `citation_variants`' `names`."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        syllables = 1 if rng.random() < 0.2 else rng.randint(2, 4)
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if 2 <= len(word) <= 12 and word not in _PARTICLES:
            names.add(word.capitalize())
    return sorted(names)


def _surname_pool(cited: Sequence[Citation], names: Sequence[str]) -> list[str]:
    """The one-word surnames of `cited` and `names`, sorted, once each. (Students tuned on
    variants of InstructGPT's 81 cited names wrote names of their own on lora, "Siegel" for
    "Gliwa et al. (2019)"; a pool widened by its bibliography's 401 left that as it was:
    docs/citation-student.md, "A wider pool of surnames".)"""
    found = {c.author for c in cited} | set(names)
    return sorted(name for name in found if _PLAIN_SURNAME.fullmatch(name))


def _swap_names(text: str, new_names: dict[str, str], paired: dict[str, str]) -> str:
    """Every surname of `new_names` replaced at once (a name swapped in is not swapped
    again), its "et al." citations by two authors where `paired` has it."""
    names = "|".join(map(re.escape, sorted(new_names, key=len, reverse=True)))
    pattern = rf"(?<![\w-])(?P<name>{names})(?P<et_al>\s+et\s*al\b\.?)?(?![\w-])"

    def replace(match: re.Match[str]) -> str:
        name, et_al = match.group("name"), match.group("et_al")
        if et_al and name in paired:
            return paired[name]
        return new_names[name] + (et_al or "")

    return re.sub(pattern, replace, text)


def _swap(text: str, replacements: dict[str, str], pattern: str) -> str:
    words = "|".join(map(re.escape, sorted(replacements, key=len, reverse=True)))
    return re.sub(pattern.format(words), lambda m: replacements[m.group(0)], text)
