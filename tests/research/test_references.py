"""The list-extraction task: hand-checked gold answers with their bibliography entries,
which hold to the extractive schema they are scored under, and entries read from a PDF."""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf
import pytest

from papers import REFERENCE_HEADING, REFERENCES
from research.references import (
    Reference,
    bibliography_surnames,
    reference_entries,
    reference_examples,
    reference_program,
)
from structune import UserError
from structune.program import canonical_json


@pytest.fixture(scope="module")
def examples():
    return reference_examples()


def test_entries_are_split_by_their_hanging_indent(test_paper_pdf: Path):
    # The test paper's bibliography: eight entries in two styles, most over two or three
    # lines, each read back whole, as one cleaned line, with nothing after the last.
    assert reference_entries(test_paper_pdf, REFERENCE_HEADING) == REFERENCES


def test_bibliography_surnames_are_the_one_word_surnames_written_surname_first(
    test_paper_pdf: Path, examples
):
    entries = reference_entries(test_paper_pdf, REFERENCE_HEADING)
    assert bibliography_surnames(entries) == [
        "Ainslie", "Amodei", "Askell", "Bai", "Brown", "Chen", "Christiano", "Dagan",
        "Dhariwal", "Drain", "Fort", "Ganguli", "Gao", "Gurevych", "Henighan", "Jones",
        "Klimov", "Legg", "Leike", "Martic", "Meyer", "Ndousse", "Radford", "Sanghai",
        "Schulman", "Shapira", "Wolski", "Zemlyanskiy",
    ]  # fmt: skip
    # not "Böhm", "Lebrón", "Lee-Thorp", "DasSarma", "de Jong"; nothing of the "Given
    # Surname" entries ("Diederik P. Kingma and Jimmy Ba."); no title words ("Training")
    surnames = bibliography_surnames([e.inputs["entry"] for e in examples])
    gold = {a for e in examples if e.paper == "instructgpt" for a in e.gold.authors}
    one_word = {a for a in gold if re.fullmatch("[A-Z][a-z]+", a)}
    assert len(one_word) > 100 and set(surnames) == one_word
    assert {"Li", "Wu"} <= set(surnames) and surnames == sorted(set(surnames))  # short names too


def test_forty_eight_hand_checked_entries_each_for_training_and_testing(examples):
    assert [sum(e.split == s for e in examples) for s in ("train", "test")] == [48, 48]
    assert {e.paper for e in examples} == {"instructgpt", "lora"}
    by_key = {(e.paper, e.entry): e for e in examples}
    assert by_key["instructgpt", 17].gold.authors[4:6] == ["Pinto", "Kaplan"]  # "H. P. d. O."
    assert by_key["lora", 10].gold.authors[-1] == "de Freitas"
    assert by_key["lora", 24].gold == Reference(
        authors=["Kingma", "Ba"], year=2017, title="Adam: A method for stochastic optimization"
    )


def test_every_gold_answer_is_copied_from_its_entry_in_order(examples):
    for e in examples:  # raises on an author or title not in the entry, or out of order
        reference_program.parse(canonical_json(e.gold.model_dump(mode="json")), e.inputs)


def test_a_pdf_without_the_heading_or_not_a_pdf_is_refused(tmp_path: Path):
    document = pymupdf.open()
    document.new_page().insert_text((72, 72), "Bibliography")
    document.save(tmp_path / "other.pdf")
    with pytest.raises(UserError, match=r"other\.pdf has no line 'References'"):
        reference_entries(tmp_path / "other.pdf", "References")
    (tmp_path / "notes.pdf").write_text("not a pdf")
    with pytest.raises(UserError, match="cannot read"):
        reference_entries(tmp_path / "notes.pdf", "References")
