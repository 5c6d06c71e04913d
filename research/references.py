"""A list-extraction task: one bibliography entry in, its authors, year and title out.

The extractive fields' test bed (`structune.constrain.extractive`): every value is text of
the entry, and `authors` is a list whose items must follow the entry's order, the field
where small models skip, repeat and loop. `research/data/references.jsonl` holds gold answers,
checked by hand, for 96 entries of two papers in two styles: InstructGPT's ("Achiam, J.,
Held, D., and Abbeel, P. (2017). Constrained policy optimization. In ...") and LoRA's
("Zeyuan Allen-Zhu and Yuanzhi Li. What Can ResNet Learn ...? In NeurIPS, 2019."), half for
training and half for testing. Each row carries its entry's text as `reference_entries`
read it from the paper's PDF (a bibliography entry is a short statement of fact), so the
task needs no PDF; `reference_entries` still reads the entries of any paper.

Gold conventions: `authors` are the surnames in the order listed, with particles ("de
Freitas", "von Arx") and suffixes ("Daumé III"), without initials, given names or "et
al."; `year` without its a/b suffix; `title` as written, without its closing full stop
(PDF artifacts such as "Cand`es" stay: the answer copies the text it is given).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from structune.constrain.extractive import Extracted
from structune.errors import UserError
from structune.program import Program
from structune.tasks.citations import clean_text


class Reference(pydantic.BaseModel):
    """One entry of a paper's bibliography."""

    authors: list[Annotated[str, Extracted(ordered=True)]] = Field(
        ..., description="Surnames of the authors, in the order listed, without 'et al.'"
    )
    year: Annotated[int, Extracted()] = Field(..., description="Year of publication")
    title: Annotated[str, Extracted()] = Field(..., description="Title of the work")


reference_program: Program[Reference] = Program(
    "Bibliography entry: {entry}\n\nExtract its authors' surnames, its year and its title.",
    Reference,
    name="references",
)

GOLD_FILE = Path(__file__).parent / "data" / "references.jsonl"

HEADINGS = {"instructgpt": "References", "lora": "REFERENCES"}
"""The heading each paper's bibliography starts under."""


@dataclass(frozen=True)
class ReferenceExample:
    """A bibliography entry with its hand-checked answer."""

    paper: str
    entry: int
    split: Literal["train", "test"]
    inputs: dict[str, Any]
    gold: Reference


def reference_entries(pdf: Path, heading: str) -> list[str]:
    """The entries of the bibliography under `heading`, each as one cleaned line.

    Entries are told apart by their hanging indent: an entry's first line starts at the
    heading's left margin, its other lines further right. The list ends at the next
    single-letter heading (an appendix) or a "Continued" table line; page numbers are
    skipped.

    Raises:
        UserError: the PDF cannot be read or has no such heading.
    """
    import pymupdf

    try:
        document = pymupdf.open(pdf)
    except Exception as exc:  # pymupdf raises its own types for missing and broken files
        raise UserError(f"cannot read {pdf}: {exc}") from None
    entries: list[str] = []
    margin: float | None = None
    with document:
        for page in document.pages():
            for block in page.get_text("dict")["blocks"]:
                for line in block.get("lines", []):
                    text = "".join(span["text"] for span in line["spans"]).strip()
                    left = line["bbox"][0]
                    if margin is None:
                        margin = left if text == heading else None
                        continue
                    if not text or text.isdigit():
                        continue
                    if (len(text) == 1 and text.isupper()) or text.startswith("Continued"):
                        return [clean_text(e) for e in entries]
                    if left < margin + 4 or not entries:
                        entries.append(text)
                    else:
                        entries[-1] += "\n" + text
    if margin is None:
        raise UserError(f"{pdf} has no line {heading!r}: is it the paper the gold answers are for?")
    return [clean_text(e) for e in entries]


# An author as InstructGPT's bibliography lists one, "Achiam, J., Held, D., and Abbeel, P.":
# a one-word surname, a comma and an initial.
_LISTED_AUTHOR = re.compile(r"(?:^|, |and )([A-Z][a-z]+), [A-Z]\.")


def bibliography_surnames(entries: Sequence[str]) -> list[str]:
    """The one-word surnames of every author of `entries` (`reference_entries`) written
    "Surname, I." (InstructGPT's style; LoRA's "Zeyuan Allen-Zhu and Yuanzhi Li" gives
    none), sorted, once each. Only an entry's author list is read, up to its "(year)".

    A paper's bibliography names several times as many people as its text cites (401
    against 81 for InstructGPT), short names among them ("Li", "Wu", "Ng"): a wider pool
    for `citation_variants` to draw from.
    """
    authors = (re.split(r"\(\d{4}", entry, maxsplit=1)[0] for entry in entries)
    return sorted({name for head in authors for name in _LISTED_AUTHOR.findall(head)})


def reference_examples() -> list[ReferenceExample]:
    """The hand-checked examples, in the data file's order (by paper, then entry)."""
    rows = [json.loads(line) for line in GOLD_FILE.read_text("utf-8").splitlines() if line.strip()]
    return [
        ReferenceExample(
            row["paper"],
            row["entry"],
            row["split"],
            {"entry": row["text"]},
            Reference(authors=row["authors"], year=row["year"], title=row["title"]),
        )
        for row in rows
    ]
