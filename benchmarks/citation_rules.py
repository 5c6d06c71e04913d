"""How exactly the citation rules read real papers: hand-checked pages and the invariants.

    .venv/bin/python benchmarks/citation_rules.py --papers ../shared/data/papers

Reads lora.pdf, instructgpt.pdf and llama2_excerpt.pdf from the folder `--papers` names,
one pymupdf text per page, and runs `structune.tasks.citations.extract_citations` on them. For
each hand-checked page (every (first author, year) on it, read off the page text by eye;
pages numbered from 0, as pymupdf numbers them) it prints the pairs found, expected,
missing and extra. Then the checks tests/unit/test_citations.py runs on the pages written for
it, here on the papers: known citations found with their citing clause; every author the
teacher reads in `SURNAME_PATTERN`'s shape; `authors="as cited"` naming the same works, in
spans of the page; instructgpt's reference-list pages yielding no citations; lora citing
narratively more often than instructgpt. Exits 1 if any check fails.

The papers are not part of the repository (the suite stands on its own without them).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from common import add_papers_flag

from structune.tasks.citations import (
    SURNAME_PATTERN,
    author_key,
    clean_text,
    extract_citations,
)

PAPERS = ("lora", "instructgpt", "llama2_excerpt")

# Every (first author, year) on these pages, read off the page text by eye.
HAND_CHECKED = {
    ("lora", 1): {
        ("Houlsby", 2019), ("Rebuffi", 2017), ("Li", 2021), ("Lester", 2021),
        ("Hambardzumyan", 2020), ("Liu", 2021), ("Li", 2018), ("Aghajanyan", 2020),
        ("Vaswani", 2017), ("Brown", 2020), ("Loshchilov", 2019), ("Kingma", 2017),
    },
    ("lora", 8): {
        ("Brown", 2020), ("Devlin", 2019), ("Collobert", 2008), ("Houlsby", 2019),
        ("Rebuffi", 2017), ("Lin", 2020), ("Mahabadi", 2021), ("Li", 2021), ("Lester", 2021),
        ("Hambardzumyan", 2020), ("Liu", 2021), ("Li", 2016), ("Cai", 2010), ("Li", 2018),
        ("Grasedyck", 2013), ("Oymak", 2019), ("Sainath", 2013), ("Povey", 2018),
        ("Zhang", 2014), ("Jaderberg", 2014), ("Zhao", 2016), ("Khodak", 2021),
        ("Denil", 2014), ("Allen-Zhu", 2019), ("Ghorbani", 2020), ("Allen-Zhu", 2020),
    },
    ("instructgpt", 1): {
        ("Radford", 2019), ("Brown", 2020), ("Fedus", 2021), ("Rae", 2021),
        ("Thoppilan", 2022), ("Leike", 2018), ("Askell", 2021), ("Christiano", 2017),
        ("Stiennon", 2020), ("Schulman", 2017),
    },
    ("llama2_excerpt", 2): {
        ("Scao", 2022), ("Touvron", 2023), ("Penedo", 2023), ("Brown", 2020), ("Hoffmann", 2022),
    },
}  # fmt: skip

# Counted by hand once; a change to the rules that moves them is worth a look.
MIN_AUTHORS = 130  # distinct first authors over the three papers
MIN_SPANS = 250  # "as cited" authors other than the first surname ("et al.", two or more)
MIN_REFERENCE_PAGES = 4  # instructgpt's reference-list pages
NARRATIVE_COUNTS = {"instructgpt": (28, 97), "lora": (46, 55)}  # (narrative, bracketed)

_YEAR = r"(?:1[89]|20)\d\d[a-z]?"
NARRATIVE = re.compile(rf"[A-Z][\w-]+(?: et al\.| (?:&|and) [A-Z][\w-]+)? \({_YEAR}\)")
BRACKETED = re.compile(rf"\([A-Z][^()\d]*?,\s+{_YEAR}(?:;\s*[A-Z][^()\d]*?,\s+{_YEAR})*\)")

Pages = dict[str, list[str]]


def read_papers(folder: Path) -> Pages:
    """Each paper's page texts; exits with one line if a PDF is not in `folder`."""
    import pymupdf

    held = ", ".join(f"{name}.pdf" for name in PAPERS)
    pages = {}
    for name in PAPERS:
        path = folder / f"{name}.pdf"
        if not path.is_file():
            sys.exit(f"--papers {folder}: no {name}.pdf there; name the folder holding {held}")
        with pymupdf.open(path) as document:
            pages[name] = [page.get_text() for page in document]
    return pages


def check(label: str, ok: bool, detail: str = "") -> bool:
    print(f"  {'ok  ' if ok else 'FAIL'}  {label}{f': {detail}' if detail else ''}")
    return ok


def missing(absent: set) -> str:
    return f"missing {sorted(absent)}" if absent else ""


def pairs(text: str) -> set[tuple[str, int]]:
    return {(c.author, c.year) for c in extract_citations(text).citations}


def hand_checked_pages(pages: Pages) -> bool:
    print(f"{'page':<18} {'found':>5} {'expected':>8} {'missing':>7} {'extra':>5}")
    ok = True
    for (paper, page), expected in sorted(HAND_CHECKED.items()):
        got = pairs(pages[paper][page])
        lost, extra = sorted(expected - got), sorted(got - expected)
        label = f"{paper} {page}"
        print(f"{label:<18} {len(got):>5} {len(expected):>8} {len(lost):>7} {len(extra):>5}")
        for kind, which in (("missing", lost), ("extra", extra)):
            if which:
                print(f"    {kind}: {', '.join(f'{a} {y}' for a, y in which)}")
        ok &= not lost and not extra
    return ok


def known_citations(pages: Pages) -> bool:
    clauses: dict[tuple[str, int], str] = {}  # the first citing clause of each
    for text in pages["instructgpt"]:
        for c in extract_citations(text).citations:
            clauses.setdefault((c.author, c.year), c.desc)
    lora = {pair for text in pages["lora"] for pair in pairs(text)}
    stiennon, askell = clauses.get(("Stiennon", 2020)), clauses.get(("Askell", 2021))
    accented = {("Böhm", 2019), ("Völske", 2017), ("Solaiman", 2021)} - clauses.keys()
    in_lora = {("Rücklé", 2020), ("Ham", 2008), ("Dolan", 2005), ("Lepikhin", 2020)} - lora
    results = [
        check(
            "instructgpt: Stiennon 2020 cited for RLHF",
            "reinforcement learning from human feedback" in (stiennon or ""),
            f"clause {stiennon!r}",
        ),
        check(
            "instructgpt: Askell 2021 in its clause",
            (askell or "").startswith("Using the language of Askell et al. (2021)"),
            f"clause {askell!r}",
        ),
        check("instructgpt: Böhm, Völske, Solaiman found", not accented, missing(accented)),
        check("lora: Rücklé, Ham, Dolan, Lepikhin found", not in_lora, missing(in_lora)),
    ]
    return all(results)


def of(total: int, failing: list) -> str:
    """How many of `total` pass, naming the failing ones where there are any."""
    return f"{total - len(failing)} of {total}" + (f"; not: {failing}" if failing else "")


def surname_shapes(pages: Pages) -> bool:
    authors = {
        c.author
        for paper in pages.values()
        for text in paper
        for c in extract_citations(text).citations
    }
    shapeless = sorted(a for a in authors if not re.fullmatch(SURNAME_PATTERN, a))
    enough = check(
        f"authors at least {MIN_AUTHORS}", len(authors) >= MIN_AUTHORS, str(len(authors))
    )
    shaped = check("authors with the surname shape", not shapeless, of(len(authors), shapeless))
    return enough and shaped


def authors_as_cited(pages: Pages) -> bool:
    spans, differ = 0, []
    for name, paper in pages.items():
        for number, text in enumerate(paper):
            first = extract_citations(text).citations
            cited = extract_citations(text, authors="as cited").citations
            if (
                [(c.year, c.desc) for c in cited] != [(c.year, c.desc) for c in first]
                or [author_key(c.author) for c in cited] != [author_key(c.author) for c in first]
                or not all(c.author in clean_text(text) for c in cited)
            ):
                differ.append(f"{name} {number}")
            spans += sum(c.author != f.author for c, f in zip(cited, first, strict=True))
    lora = " ".join(pages["lora"])
    authors = {c.author for c in extract_citations(lora, authors="as cited").citations}
    absent = {"Li & Liang", "Houlsby et al.", "Ham & Lee"} - authors
    total = sum(map(len, pages.values()))
    same = check(
        "pages where as cited names the same works, in spans", not differ, of(total, differ)
    )
    enough = check(f"as-cited spans at least {MIN_SPANS}", spans >= MIN_SPANS, str(spans))
    lora_ok = check("lora: Li & Liang, Houlsby et al., Ham & Lee", not absent, missing(absent))
    return same and enough and lora_ok


def reference_pages(pages: Pages) -> bool:
    instructgpt = pages["instructgpt"]
    references = [
        number
        for number, text in enumerate(instructgpt)
        if text.count(", et al. (") + text.count("., and ") > 5
    ]
    cited = [number for number in references if pairs(instructgpt[number])]
    label = f"instructgpt reference pages at least {MIN_REFERENCE_PAGES}"
    enough = check(label, len(references) >= MIN_REFERENCE_PAGES, str(len(references)))
    empty = check("reference pages without citations", not cited, of(len(references), cited))
    return enough and empty


def narrative_counts(pages: Pages) -> bool:
    counts = {
        name: tuple(
            sum(len(shape.findall(clean_text(text))) for text in pages[name])
            for shape in (NARRATIVE, BRACKETED)
        )
        for name in NARRATIVE_COUNTS
    }
    return check(
        "(narrative, bracketed) citations",
        counts == NARRATIVE_COUNTS,
        f"{counts}" + ("" if counts == NARRATIVE_COUNTS else f", expected {NARRATIVE_COUNTS}"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_papers_flag(parser, f"a folder holding {', '.join(f'{name}.pdf' for name in PAPERS)}")
    args = parser.parse_args()
    pages = read_papers(args.papers)
    print("hand-checked pages (numbered from 0)")
    checks = {"hand-checked pages": hand_checked_pages(pages)}
    for name, run in [
        ("known citations", known_citations),
        ("surname shapes", surname_shapes),
        ("authors as cited", authors_as_cited),
        ("reference pages", reference_pages),
        ("narrative counts", narrative_counts),
    ]:
        print(f"\n{name}")
        checks[name] = run(pages)
    failed = [name for name, ok in checks.items() if not ok]
    print(f"\n{'failed: ' + ', '.join(failed) if failed else 'all checks pass'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
