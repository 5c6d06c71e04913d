"""The list-extraction task: bibliography entries read from the real papers, and gold
answers that hold to the extractive schema they are scored under."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pymupdf
import pytest

from structune import UserError
from structune.program import canonical_json
from structune.tasks.references import (
    HEADINGS,
    Reference,
    bibliography_surnames,
    reference_entries,
    reference_examples,
    reference_program,
)

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "papers"


@pytest.fixture(scope="module")
def examples():
    return reference_examples(PAPERS)


def test_entries_are_split_by_their_hanging_indent():
    entries = reference_entries(PAPERS / "lora.pdf", HEADINGS["lora"])
    assert entries[0].startswith("Armen Aghajanyan, Luke Zettlemoyer, and Sonal Gupta.")
    assert entries[0].endswith("URL http://arxiv.org/abs/2012.13255.")
    assert "\n" not in entries[0]  # one cleaned line
    assert entries[-1].startswith("Victor Zhong, Caiming Xiong, and Richard Socher.")  # no appendix
    assert not any(e.isdigit() for e in entries)  # page numbers skipped


def test_bibliography_surnames_are_the_hand_checked_authors_of_instructgpts_style(examples):
    entries = {p: reference_entries(PAPERS / f"{p}.pdf", HEADINGS[p]) for p in HEADINGS}
    surnames = bibliography_surnames(entries["instructgpt"])
    gold = {a for e in examples if e.paper == "instructgpt" for a in e.gold.authors}
    one_word = {a for a in gold if re.fullmatch("[A-Z][a-z]+", a)}  # not "Böhm", "de Freitas"
    assert len(one_word) > 100 and one_word <= set(surnames)
    assert {"Li", "Wu", "Ng"} <= set(surnames) and surnames == sorted(set(surnames))
    # nothing after an entry's year: its title's capitalized words are not names
    assert "Constrained" not in surnames and "Training" not in surnames
    assert bibliography_surnames(entries["lora"]) == []  # "Zeyuan Allen-Zhu and Yuanzhi Li."


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


def test_another_version_of_a_paper_is_refused(tmp_path):
    shutil.copy(PAPERS / "instructgpt.pdf", tmp_path / "instructgpt.pdf")
    document = pymupdf.open()
    document.new_page().insert_text((72, 72), "REFERENCES")
    document.save(tmp_path / "lora.pdf")
    with pytest.raises(UserError, match=r"lora\.pdf entry 0 reads '', not 'Armen Aghajanyan"):
        reference_examples(tmp_path)
    (tmp_path / "lora.pdf").write_text("not a pdf")
    with pytest.raises(UserError, match="cannot read"):
        reference_examples(tmp_path)
    (tmp_path / "lora.pdf").unlink()
    with pytest.raises(UserError, match=r"lora\.pdf not found"):
        reference_examples(tmp_path)
