"""Training contexts made from recorded ones (`research.citation_variants`): each variant
cites what the rules read in it, and the rules' teacher answers it."""

import re

from structune.tasks.citations import extract_citations


def test_variants_swap_every_cited_surname_and_year_and_keep_the_rest():
    from research.citation_variants import citation_variants

    cited = "RLHF (Christiano et al., 2017) and Ouyang (2022) cite Christiano (2017)."
    inputs = [
        {"query_str": "q", "context_str": cited},
        {"query_str": "q", "context_str": "Later, Stiennon et al. (2020) did so too."},
        {"query_str": "q", "context_str": "No citation in here at all."},
    ]
    variants = citation_variants(inputs, per_input=3)
    assert len(variants) == 6  # the input without citations has none
    pool = {"Christiano", "Ouyang", "Stiennon"}

    def skeleton(text: str) -> str:
        return re.sub(r"[A-Z][a-z]+|\d{4}", "_", text)

    for variant in variants[:3]:
        found = extract_citations(variant["context_str"]).citations
        authors = [c.author for c in found]
        assert authors[0] != "Christiano" and authors[1] != "Ouyang"
        assert set(authors) <= pool and all(1990 <= c.year <= 2023 for c in found)
        # Christiano's two citations become the same new name: one pair, as before.
        assert len(found) == 2 and variant["query_str"] == "q"
        assert skeleton(variant["context_str"]) == skeleton(cited)


def test_variants_draw_surnames_from_the_names_given_too():
    from research.citation_variants import citation_variants, long_list_variants

    inputs = [
        {"query_str": "q", "context_str": "RLHF (Christiano et al., 2017) works (Ouyang, 2022)."}
    ]
    names = ["Li", "Wu", "Ng", "Allen-Zhu", "van"]  # the last two are no one-word surnames
    drawn = {
        c.author
        for v in citation_variants(inputs, per_input=40, names=names)
        + long_list_variants(inputs, count=5, lengths=(9, 12), names=names)
        for c in extract_citations(v["context_str"]).citations
    }
    assert drawn == {"Christiano", "Ouyang", "Li", "Wu", "Ng"}
    # no names given: the draws of earlier recipes
    assert citation_variants(inputs, per_input=3) == citation_variants(
        inputs, per_input=3, names=[]
    )


def test_made_up_surnames_are_new_one_word_names_the_rules_read_as_authors():
    from research.citation_variants import citation_variants, made_up_surnames

    names = made_up_surnames(300, seed=3)
    assert len(names) == len(set(names)) == 300 and names == sorted(names)
    assert names == made_up_surnames(300, seed=3) != made_up_surnames(300, seed=4)
    assert all(re.fullmatch(r"[A-Z][a-z]{1,11}", name) for name in names)
    assert sum(len(name) <= 4 for name in names) >= 30  # short ones, as "Li" or "Wu"
    # swapped into a context, the rules read them back as the cited authors
    inputs = [
        {"query_str": "q", "context_str": "RLHF (Christiano et al., 2017) and Ouyang (2022)."}
    ]
    drawn = {
        c.author
        for v in citation_variants(inputs, per_input=60, names=names)
        for c in extract_citations(v["context_str"]).citations
    }
    assert len(drawn - {"Christiano", "Ouyang"}) > 50 and drawn <= {"Christiano", "Ouyang", *names}


def test_nested_variants_end_a_citing_clause_in_two_brackets_and_keep_its_citations():
    from research.citation_variants import nested_variants

    cited = (
        "We train with PPO (Schulman et al., 2017), as Christiano (2017) did. "
        "The data (Ouyang et al., 2022) is new."
    )
    inputs = [
        {"query_str": "q", "context_str": cited},
        {"query_str": "q", "context_str": "No citation in here at all."},
    ]
    variants = nested_variants(inputs, count=20, seed=3)
    assert len(variants) == 20 and all(v["query_str"] == "q" for v in variants)
    pairs = {(c.author, c.year) for c in extract_citations(cited).citations}
    for variant in variants:
        found = extract_citations(variant["context_str"]).citations
        assert {(c.author, c.year) for c in found} == pairs
        # only "PPO (Schulman ...)," ends a clause after a word; "Christiano (2017)" cites
        # with its own name, and "(Ouyang ...)" follows no capitalized word
        (wrapped,) = [c.desc for c in found if c.desc.endswith("2017))")]
        assert wrapped.startswith("We train with (") and "PPO (Schulman et al., 2017))" in wrapped
    assert nested_variants(inputs[1:], count=5) == []
    assert nested_variants(inputs, count=5) == nested_variants(inputs, count=5)


def test_yearless_variants_write_one_year_as_a_letter_and_the_teacher_leaves_it_out():
    from research.citation_variants import yearless_variants

    cited = (
        "GPT-2 (Radford et al., 2019b) and BERT (Devlin et al., 2019), as Smith and Jones (2020)."
    )
    inputs = [
        {"query_str": "q", "context_str": cited},
        {"query_str": "q", "context_str": "No citation in 2019 at all."},
    ]
    pairs = {(c.author, c.year) for c in extract_citations(cited).citations}
    assert pairs == {("Radford", 2019), ("Devlin", 2019), ("Smith", 2020)}
    variants = yearless_variants(inputs, count=30, seed=2)
    assert len(variants) == 30 and all(v["query_str"] == "q" for v in variants)
    left_out = set()
    for variant in variants:
        text = variant["context_str"]
        found = {(c.author, c.year) for c in extract_citations(text).citations}
        (gone,) = pairs - found
        assert found < pairs
        left_out.add(gone)
        assert any(shape in text for shape in ("et al., a)", "et al., b)", "(a)", "(b)"))
    assert left_out == pairs  # each of the three drawn
    assert yearless_variants(inputs[1:], count=5) == []
    assert yearless_variants(inputs, count=5) == yearless_variants(inputs, count=5)


def test_narrative_variants_write_bracketed_citations_narratively_and_cite_the_same_works():
    from research.citation_variants import narrative_variants

    cited = (
        "We train with PPO (Schulman et al., 2017; Lee & Kim, 2019a), as Christiano (2017) "
        "did. The data (e.g., Ouyang et al., 2022) is new (Smith and Jones, 2020)."
    )
    inputs = [
        {"query_str": "q", "context_str": cited},
        {"query_str": "q", "context_str": "No citation (in 2019) at all."},
    ]
    answer = extract_citations(cited).citations
    variants = narrative_variants(inputs, count=30, seed=4)
    assert len(variants) == 30 and all(v["query_str"] == "q" for v in variants)
    written = set()
    for variant in variants:
        text = variant["context_str"]
        assert [(c.author, c.year) for c in extract_citations(text).citations] == [
            (c.author, c.year) for c in answer
        ]
        # "(e.g., ...)" holds more than citations: it stays as it is
        assert "The data (e.g., Ouyang et al., 2022) is new" in text
        written |= {
            shape
            for shape in (
                "PPO Schulman et al. (2017); Lee & Kim (2019a), as",
                "new Smith and Jones (2020).",
            )
            if shape in text
        }
        assert text != cited
    assert len(written) == 2  # each bracket written narratively in some variant
    assert narrative_variants(inputs[1:], count=5) == []
    assert narrative_variants(inputs, count=5) == narrative_variants(inputs, count=5)


def test_variants_write_et_al_citations_with_two_authors_where_asked():
    from research.citation_variants import citation_variants

    cited = "RLHF (Christiano et al., 2017) and Ouyang et al. (2022) cite Christiano (2017)."
    inputs = [{"query_str": "q", "context_str": cited}]
    # the default draws nothing more: the variants of earlier recipes stay as they were
    assert citation_variants(inputs, per_input=3) == citation_variants(
        inputs, per_input=3, two_authors=0.0
    )
    for variant in citation_variants(inputs, per_input=5, two_authors=1.0, seed=1):
        text = variant["context_str"]
        assert "et al" not in text
        pairs = re.findall(r"([A-Z][a-z]+) (?:&|and) ([A-Z][a-z]+)", text)
        assert len(pairs) == 2 and all(first != second for first, second in pairs)
        found = extract_citations(text).citations
        # the rules read the first of the two authors, as in "Li & Liang (2021)"
        assert [c.author for c in found] == [pairs[0][0], pairs[1][0]]


def test_inserted_variants_cite_where_the_text_did_not_and_the_teacher_reads_them():
    from research.citation_variants import inserted_variants

    plain = "We train a model. It works well (see Table 2). The end of the paragraph."
    cited = "Prior work (Smith et al., 2019) and Jones & Lee (2020) did so."
    inputs = [{"query_str": "q", "context_str": plain}, {"query_str": "q", "context_str": cited}]
    variants = inserted_variants(inputs, count=40, names=["Brown", "Gliwa"], seed=3)
    assert len(variants) == 40 and variants == inserted_variants(
        inputs, count=40, names=["Brown", "Gliwa"], seed=3
    )
    for variant in variants:
        text = variant["context_str"]
        given = plain if text.startswith("We") else cited
        before = {(c.author, c.year) for c in extract_citations(given).citations}
        added = {(c.author, c.year) for c in extract_citations(text).citations} - before
        assert 1 <= len(added) <= 4  # one or two insertions of one or two works
        assert {a for a, _ in added} <= {"Smith", "Jones", "Brown", "Gliwa"}
        assert "(see Table 2)" in text or given == cited  # never inside a bracket
        assert text.endswith(".")
    # lora's shape among them: a narrative two-author citation ending the window
    assert any(
        re.search(r"[A-Z][a-z]+ & [A-Z][a-z]+ \(\d{4}\)\.$", v["context_str"]) for v in variants
    )
    assert inserted_variants(inputs[:1], count=3) == []  # no surnames to draw


def test_long_list_variants_add_clauses_the_teacher_reads_in_order():
    from research.citation_variants import long_list_variants

    cited = (
        "We evaluate on TruthfulQA (Lin et al., 2021) and RealToxicityPrompts "
        "(Gehman et al., 2020). Others (Smith and Jones, 2019; Brown et al., 2020) agree."
    )
    inputs = [
        {"query_str": "q", "context_str": cited},
        {"query_str": "q", "context_str": "No citation in here, says GPT-3."},
    ]
    variants = long_list_variants(inputs, count=5, lengths=(9, 12))
    assert len(variants) == 5
    for variant in variants:
        text = variant["context_str"]
        found = extract_citations(text).citations
        assert 9 <= len(found) <= 12 and variant["query_str"] == "q"
        added = re.findall(r", (?:TruthfulQA|GPT-3) \(([A-Z][a-z]+) et al\., (\d{4})\)", text)
        assert len(added) == len(found) - 4
        # the added clauses stand after one single citation, the rest of the text as it was
        assert re.sub(r", (?:TruthfulQA|GPT-3) \([^()]*\)", "", text) == cited
        by_pair = {(c.author, str(c.year)): c.desc for c in found}
        for surname, year in added:
            desc = by_pair[surname, year]  # its own clause, not the whole sentence
            assert f"({surname} et al., {year})" in desc and len(desc) < 80
        assert {a for a, _ in added} <= {"Lin", "Gehman", "Brown", "Smith"}
    # nothing to lengthen: no input cites, or every one already lists enough works
    assert long_list_variants(inputs[1:], count=3) == []
    assert long_list_variants(inputs[:1], count=3, lengths=(2, 4)) == []
