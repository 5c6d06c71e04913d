"""The citation task: rules that read author-year citations, the offline teacher, scoring.

Page-text tests read tests/data/citation_pages: pages written for these tests in the shape
PDF text extraction gives them, each with the citations it holds written down beside it.
The same checks on real papers, read by eye, are benchmarks/citation_rules.py.
"""

import json
import re
from pathlib import Path

import pytest

from structune import CallableLLM, InvalidOutput, UserError
from structune.program import FORMAT_INSTRUCTIONS
from structune.tasks.citations import (
    MAX_DESC_CHARS,
    SURNAME_PATTERN,
    Citation,
    CitationScore,
    Response,
    author_key,
    citation_pairs,
    citation_program,
    citation_teacher,
    clean_text,
    context_of,
    extract_citations,
    pairs_in_context,
    score_citations,
    sourced_citation_program,
    sourced_program,
)


def found(text: str) -> list[tuple[str, int]]:
    return [(c.author, c.year) for c in extract_citations(text).citations]


# --- patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("as in prior work (Ouyang et al., 2022).", [("Ouyang", 2022)]),
        ("constitutional methods [Bai et al., 2022] help.", [("Bai", 2022)]),
        ("Smith and Jones (2020) show it.", [("Smith", 2020)]),
        ("Smith & Jones (2020) show it.", [("Smith", 2020)]),
        ("Smith, Jones, and Lee (2019) show it.", [("Smith", 2019)]),
        ("big models (Brown et al., 2020; Rae et al., 2021).", [("Brown", 2020), ("Rae", 2021)]),
        ("Christiano et al. (2017) introduced it.", [("Christiano", 2017)]),
        ("summaries (Stiennon et al., 2020a) work.", [("Stiennon", 2020)]),
        ("other tasks (e.g., Wu et al., 2021).", [("Wu", 2021)]),
        ("assistants (see Askell et al., 2021).", [("Askell", 2021)]),
        ("RLHF (RLHF; Christiano et al., 2017).", [("Christiano", 2017)]),
        ("alignment (Gabriel, 2020).", [("Gabriel", 2020)]),
        ("As discussed in Gabriel (2020), it is subtle.", [("Gabriel", 2020)]),
        ("parsing (Lawrence and Riezler, 2018).", [("Lawrence", 2018)]),
        ("parsing (Smith et al. 2019).", [("Smith", 2019)]),
        ("Rocktäschel et al. (2015) attend.", [("Rocktäschel", 2015)]),
        (
            "(Łukasiewicz, 1951) and (Özdemir et al., 2020).",
            [("Łukasiewicz", 1951), ("Özdemir", 2020)],
        ),
        ("t-SNE (van der Maaten and Hinton, 2008).", [("van der Maaten", 2008)]),
        (
            "Van Durme et al. (2018) and (Dos Santos et al., 2020).",
            [("Van Durme", 2018), ("Dos Santos", 2020)],
        ),
        ("theory (Allen-Zhu & Li, 2020b).", [("Allen-Zhu", 2020)]),
        ("two papers Smith et al. (2019, 2020b).", [("Smith", 2019), ("Smith", 2020)]),
        ("safety (Dinan et al., 2019a,b).", [("Dinan", 2019)]),
        ("It includes MNLI (inference, Williams et al. (2018)).", [("Williams", 2018)]),
        ("Xu et al. [2020] filter data.", [("Xu", 2020)]),
    ],
)
def test_citation_forms(text, expected):
    assert found(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # line-break hyphenation from PDF text, inside and around the citation
        ("GPT-2 (Rad-\nford et al., 2019) is", [("Radford", 2019)]),
        (
            "tuning (Lester et al., 2021; Ham-\nbardzumyan et al., 2020).",
            [("Lester", 2021), ("Hambardzumyan", 2020)],
        ),
        ("result in Allen-\nZhu & Li (2020b) suggests", [("Allen-Zhu", 2020)]),
        ("design in Pfeiffer\net al.\n(2021), which", [("Pfeiffer", 2021)]),
        # pymupdf's spacing accents and ligatures
        ("AdapterDrop (R\u00a8uckl\u00b4e et al., 2020) drops", [("Rücklé", 2020)]),
        (
            "adapters (Houlsby et al., 2019; Rebuf\ufb01et al., 2017)",
            [("Houlsby", 2019), ("Rebuffi", 2017)],
        ),
        ("Chinchilla (Ho\ufb00mann et al., 2022)", [("Hoffmann", 2022)]),
        # the opening parenthesis fell in the previous chunk
        ("et al., 2019; Wu et al., 2021). We then", [("Wu", 2021)]),
    ],
)
def test_pdf_text_is_repaired(text, expected):
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Results are in Table 2 (2020).",
        "See Section 3 (2019) for details.",
        "As shown in Figure 1, the loss falls.",
        "We label (1,000 examples) by hand.",
        "Collected over a year (January 2020) and again (May, 2021).",
        "In 2020 (Jan) we started.",
        "GPT-3 (2020) and BERT (2019) and DeBERTa (2021).",
        "at a venue (ICML, 2019) and (NeurIPS 2020).",
        "the data (2020) was noisy.",
        "Bostrom, N. (2014). Superintelligence. Dunod.",
        "Lawrence, C. and Riezler, S. (2018). Improving a neural semantic parser.",
        "In Advances in Neural Information Processing Systems, 2018.",
        "the rate (about 50%, 2019 to 2021) grew.",
        "GPT-2 (Radford et al., b) has no year.",
    ],
)
def test_no_false_positives(text):
    assert found(text) == []


def test_an_acronym_before_a_real_author_does_not_hide_the_author():
    assert found("compare BERT and Smith (2020) here.") == [("Smith", 2020)]


def test_duplicates_keep_the_first_occurrence_in_source_order():
    text = (
        "Zeta models exist (Smith et al., 2020). Adams (2019) disagrees. "
        "Later, Smith et al. (2020) and (Smith, 2020a) and (smith-free, 2020) agree."
    )
    response = extract_citations(text)
    assert [(c.author, c.year) for c in response.citations] == [("Smith", 2020), ("Adams", 2019)]
    assert response.citations[0].desc == "Zeta models exist (Smith et al., 2020)."


def test_desc_is_the_citing_clause_on_one_line():
    text = (
        "Intro text here. As shown by Smith et al.\n(2020), low-rank\nupdates suf-\nfice "
        "(e.g., Wu et al., 2021). Next sentence (Lee, 2018). We test on Winogender "
        "(Rudinger et al., 2018), CrowS-Pairs (Nangia et al., 2020); and DROP (Dua, 2019)."
    )
    descs = [c.desc for c in extract_citations(text).citations]
    assert descs == [
        "As shown by Smith et al. (2020)",
        "low-rank updates suffice (e.g., Wu et al., 2021).",  # the comma in brackets stays
        "Next sentence (Lee, 2018).",
        "We test on Winogender (Rudinger et al., 2018)",
        "CrowS-Pairs (Nangia et al., 2020)",
        "and DROP (Dua, 2019).",
    ]


def test_desc_spans_the_clauses_a_narrative_author_list_runs_over():
    (citation,) = extract_citations("Then Smith, Jones, and Lee (2020) agree, mostly.").citations
    assert citation.desc == "Then Smith, Jones, and Lee (2020) agree"


def test_desc_is_bounded_when_the_text_has_no_sentence_ends():
    text = " ".join(["word"] * 200) + " (Smith et al., 2020) " + " ".join(["more"] * 200)
    (citation,) = extract_citations(text).citations
    assert len(citation.desc) <= MAX_DESC_CHARS
    assert "(Smith et al., 2020)" in citation.desc
    assert "\n" not in citation.desc and citation.desc == citation.desc.strip()


def test_a_long_clause_gives_a_bracketed_group_its_lead_in_and_the_whole_group():
    # lora's sentence listing ten works in two groups, with no comma between them: a window
    # around each citation would give every work a shifted copy of the same words.
    first = "; ".join(f"{name} et al., 2019" for name in ("Adams", "Baker", "Clark", "Dunn"))
    second = "; ".join(f"{name} et al., 2021" for name in ("Evans", "Fox", "Gray", "Hill"))
    text = (
        "There are two strategies when it comes to efficient adaptation: adding adapter "
        f"layers ({first}) or optimizing some forms of the input layer activations ({second}) "
        "and both have limits in large-scale and latency-sensitive production scenarios."
    )
    descs = [c.desc for c in extract_citations(text).citations]
    assert len(text) > MAX_DESC_CHARS and len(descs) == 8
    assert set(descs[:4]) == {text[: text.index(")") + 1]}
    assert set(descs[4:]) == {f"or optimizing some forms of the input layer activations ({second})"}


def test_no_citations_gives_an_empty_response():
    assert extract_citations("").citations == []
    assert extract_citations("Plain prose with no references at all.").citations == []


# --- page text ---------------------------------------------------------------------------


# What each page cites, every (first author, year), written down with the page.
PAGE_CITATIONS = {
    "adaptation": {
        ("Li", 2021), ("Lester", 2021), ("Houlsby", 2019), ("Vaswani", 2017),
        ("Rebuffi", 2017), ("Rücklé", 2021), ("Aghajanyan", 2020), ("Hu", 2021),
        ("Smith", 2020), ("Stiennon", 2020), ("Pfeiffer", 2021), ("Allen-Zhu", 2020),
        ("Brown", 2020), ("Schick", 2021), ("Liu", 2021), ("Wei", 2022), ("Kojima", 2022),
        ("Denil", 2013), ("Jaderberg", 2014), ("Sainath", 2013),
    },
    "alignment": {
        ("Radford", 2019), ("Brown", 2020), ("Rae", 2021), ("Bender", 2021),
        ("Bommasani", 2021), ("Weidinger", 2021), ("Leike", 2018), ("Kenton", 2021),
        ("Askell", 2021), ("Christiano", 2017), ("Stiennon", 2020), ("Böhm", 2019),
        ("Völske", 2017), ("Solaiman", 2021), ("Schulman", 2017), ("Nakano", 2021),
        ("Cobbe", 2021), ("Ziegler", 2019), ("Jaques", 2019), ("Hancock", 2019), ("Lin", 2021),
        ("Gehman", 2020), ("Rudinger", 2018), ("Nangia", 2020), ("Wei", 2021), ("Sanh", 2021),
    },
    "pretraining": {
        ("Wu", 2021), ("Touvron", 2023), ("Lee", 2022), ("Bai", 2022), ("Ganguli", 2022),
        ("Perez", 2022), ("Broder", 1997), ("de Freitas", 2019), ("O\u2019Neil", 2016),
        ("Loshchilov", 2019), ("Hoffmann", 2022), ("Xiong", 2020), ("Su", 2021),
        ("Shazeer", 2020), ("Chowdhery", 2022), ("Zhang", 2022),
    },
    "references": set(),  # a reference list: names and years, but no citation
}  # fmt: skip


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """Pages of papers written for these tests (tests/data/citation_pages) as pymupdf's
    `get_text` gives a page: hard line breaks, words hyphenated across lines, ligatures,
    accents spaced before their letter ("B\u00a8ohm"); headers and page numbers left in."""
    folder = Path(__file__).parents[1] / "data" / "citation_pages"
    return {name: (folder / f"{name}.txt").read_text(encoding="utf-8") for name in PAGE_CITATIONS}


@pytest.mark.parametrize("name", sorted(PAGE_CITATIONS))
def test_each_page_is_read_exactly(pages, name):
    assert set(found(pages[name])) == PAGE_CITATIONS[name]


def test_known_citations_are_found_with_their_clause(pages):
    def clauses(name: str) -> dict[tuple[str, int], str]:
        return {(c.author, c.year): c.desc for c in extract_citations(pages[name]).citations}

    alignment, adaptation = clauses("alignment"), clauses("adaptation")
    assert "reinforcement learning from human feedback" in alignment["Stiennon", 2020]
    assert alignment["Askell", 2021] == "In the terms of Askell et al. (2021)"
    assert alignment["Solaiman", 2021] == "as Solaiman and Dennison (2021) show."
    assert alignment["Böhm", 2019] == (  # "B\u00a8ohm" on the page
        "Rewards can also come from ratings instead of comparisons (Böhm et al., 2019)"
    )
    assert alignment["Cobbe", 2021] == (
        "and a reward model of this kind can also rank samples at test time "
        "(e.g., Nakano et al., 2021; Cobbe et al., 2021)."
    )
    # repaired: hyphenation undone, ligatures spelled out, one line
    assert adaptation["Stiennon", 2020] == (
        "a result that Stiennon et al. (2020a) also report for summarization"
    )
    assert adaptation["Rebuffi", 2017] == "as Rebuffi et al. (2017) did for vision"
    assert adaptation["Allen-Zhu", 2020] == (
        "The analysis of Allen-Zhu & Li (2020b) explains why a low-rank update can be enough."
    )


def test_every_author_the_teacher_reads_has_the_surname_shape(pages):
    """`SURNAME_PATTERN` refuses no author the teacher answers: particles, accents,
    apostrophes, hyphens and two-letter surnames among them."""
    authors = {c.author for text in pages.values() for c in extract_citations(text).citations}
    assert authors == {author for pairs in PAGE_CITATIONS.values() for author, _ in pairs}
    assert [a for a in sorted(authors) if not re.fullmatch(SURNAME_PATTERN, a)] == []


def test_authors_as_cited_are_copied_whole_and_scored_as_the_first_surname(pages):
    """On every page, `authors="as cited"` names the same works as the first surname does,
    each author a span of the repaired page text."""
    spans = 0
    for text in pages.values():
        first = extract_citations(text).citations
        cited = extract_citations(text, authors="as cited").citations
        assert [(c.year, c.desc) for c in cited] == [(c.year, c.desc) for c in first]
        assert [author_key(c.author) for c in cited] == [author_key(c.author) for c in first]
        assert all(c.author in clean_text(text) for c in cited)
        spans += sum(c.author != f.author for c, f in zip(cited, first, strict=True))
    assert spans == 59  # all but Broder, O'Neil and Shazeer, cited alone
    cited = extract_citations(pages["adaptation"], authors="as cited").citations
    assert [c.author for c in cited] == [
        "Li & Liang", "Lester et al.", "Houlsby et al.", "Vaswani et al.", "Rebuffi et al.",
        "Rücklé et al.", "Aghajanyan et al.", "Hu et al.", "Smith and Jones", "Stiennon et al.",
        "Pfeiffer et al.", "Allen-Zhu & Li", "Brown et al.", "Schick and Schütze", "Liu et al.",
        "Wei et al.", "Kojima et al.", "Denil et al.", "Jaderberg et al.", "Sainath et al.",
    ]  # fmt: skip


def test_reference_lists_yield_no_citations(pages):
    """InstructGPT's style: "Achiam, J., ..., and Abbeel, P. (2017). Title. In ...": every
    entry names its authors and year, and none of them is a citation."""
    text = pages["references"]
    assert len(re.findall(r"\((?:19|20)\d\d[a-z]?\)\.", text)) == 14  # one year per entry
    assert found(text) == []


# --- program and teacher ----------------------------------------------------------------


def test_models_match_the_notebook():
    schema = Response.model_json_schema()
    assert list(schema["properties"]) == ["citations"]
    fields = Citation.model_json_schema()["properties"]
    assert list(fields) == ["author", "year", "desc"]
    assert fields["author"]["description"] == "Inferred first author (usually last name"
    assert fields["year"]["type"] == "integer"


def test_program_uses_the_text_qa_prompt():
    assert citation_program.name == "citations"
    assert citation_program.variables == {"context_str", "query_str"}
    prompt = citation_program.render({"context_str": "CTX", "query_str": "Q?"})
    assert prompt == (
        "Context information is below.\n---------------------\nCTX\n---------------------\n"
        "Given the context information and not prior knowledge, answer the query.\n"
        "Query: Q?\nAnswer: "
    )


def test_the_sourced_program_asks_the_same_with_bounds_and_checks_authors_against_the_context():
    inputs = {"context_str": "As Lee (2018) shows.", "query_str": "Which citations?"}
    (system, user), (same_system, notebook_user) = (
        sourced_citation_program.messages(inputs),
        citation_program.messages(inputs),
    )
    assert system == same_system
    bounds = ', "maxLength": 300', ', "maximum": 2099, "minimum": 1800'
    assert user["content"].count(bounds[0]) == 1 and user["content"].count(bounds[1]) == 1
    assert user["content"].replace(bounds[0], "").replace(bounds[1], "") == notebook_user["content"]
    page = {**inputs, "context_str": "Page 18: as Lee (2018) shows."}
    with pytest.raises(InvalidOutput, match="greater than or equal to 1800"):
        sourced_citation_program.parse(
            '{"citations":[{"author":"Lee","year":18,"desc":"As Lee (2018) shows."}]}', page
        )
    invented = '{"citations":[{"author":"Leeds","year":2018,"desc":"As Lee (2018) shows."}]}'
    assert citation_program.parse(invented, inputs)
    with pytest.raises(InvalidOutput, match=r'citations\[0\]\.author: "Leeds" is not in'):
        sourced_citation_program.parse(invented, inputs)
    shaped = sourced_program(SURNAME_PATTERN)
    named = {**inputs, "context_str": "On SAMSum (Gliwa et al., 2019) and E2E (Lee, 2018)."}
    assert sourced_citation_program.parse(
        '{"citations":[{"author":"SAMSum","year":2019,"desc":"On"}]}', named
    )
    for author in ("SAMSum", "E2E"):  # copied, but no surname
        shapeless = f'{{"citations":[{{"author":"{author}","year":2019,"desc":"On"}}]}}'
        with pytest.raises(InvalidOutput, match=f'"{author}" does not match the pattern'):
            shaped.parse(shapeless, named)


def test_a_desc_first_program_shows_records_and_checks_each_citations_desc_before_its_author(
    tmp_path,
):
    from structune.record import DatasetStore, record

    desc_first = sourced_program(desc_first=True)
    inputs = {"context_str": "As Lee (2018) shows.", "query_str": "Which citations?"}
    prompt = desc_first.messages(inputs)[-1]["content"]
    assert prompt.index('"desc"') < prompt.index('"author"') < prompt.index('"year"')
    assert desc_first.schema_hash != sourced_citation_program.schema_hash  # kept apart
    with DatasetStore(tmp_path / "d.db") as store:
        record(desc_first, CallableLLM(citation_teacher), [inputs], store=store, progress=False)
        (example,) = store.examples("citations")
    answer = example.training_conversation()[-1]["content"]
    assert answer == '{"citations":[{"desc":"As Lee (2018) shows.","author":"Lee","year":2018}]}'
    # the order is how an answer is written, not what it means
    author_first = '{"citations":[{"author":"Lee","year":2018,"desc":"As Lee (2018) shows."}]}'
    assert desc_first.parse(author_first, inputs) == desc_first.parse(answer, inputs)
    with pytest.raises(InvalidOutput, match=r'citations\[0\]\.author: "Leeds" is not in'):
        desc_first.parse(author_first.replace('"Lee"', '"Leeds"'), inputs)


CONTEXT = (
    "Attention over pairs was studied by Rocktäschel et al. (2015).\n"
    "Low-rank updates suf-\nfice (Hu et al., 2021; Aghajanyan et al., 2020)."
)


def test_teacher_reads_only_the_context_and_answers_utf8_json():
    messages = citation_program.messages(
        {"context_str": CONTEXT, "query_str": "Which works does (Query et al., 1999) cite?"}
    )
    answer = citation_teacher(messages)
    assert "Rocktäschel" in answer and "\\u" not in answer
    response = Response.model_validate_json(answer)
    assert response == extract_citations(CONTEXT)
    assert [(c.author, c.year) for c in response.citations] == [
        ("Rocktäschel", 2015),
        ("Hu", 2021),
        ("Aghajanyan", 2020),
    ]
    assert json.loads(answer) == response.model_dump()


def test_teacher_without_markers_ignores_the_format_instructions():
    schema = json.dumps({"description": "Smith et al. (2001) would be a citation"})
    prompt = "Find the citations in: (Lee, 2018) says so." + FORMAT_INSTRUCTIONS.format(
        schema=schema
    )
    assert context_of(prompt) == "Find the citations in: (Lee, 2018) says so."
    answer = citation_teacher([{"role": "user", "content": prompt}])
    assert citation_pairs(Response.model_validate_json(answer)) == {("lee", 2018)}


def test_context_keeps_lines_of_dashes_inside_it():
    inner = f"(Lee, 2018)\n{'-' * 21}\n(Kim, 2019)"
    prompt = citation_program.render({"context_str": inner, "query_str": "q"})
    assert context_of(prompt) == inner


def test_the_chunk_metadata_header_is_not_part_of_the_first_citing_sentence():
    context = "file_name: a.pdf\ntitle: a\n\nThus we say so. RLHF (Christiano et al., 2017) helps."
    answer = json.loads(
        citation_teacher(citation_program.messages({"query_str": "q", "context_str": context}))
    )
    assert answer["citations"][0]["desc"] == "RLHF (Christiano et al., 2017) helps."
    two_chunks = f"{context}\n\nfile_name: a.pdf\ntitle: a\n\nSo (Lee, 2018) did."  # top-2
    prompt = citation_program.render({"query_str": "q", "context_str": two_chunks})
    assert "file_name" not in context_of(prompt) and "(Lee, 2018) did" in context_of(prompt)
    caption = "Table 1: as in (Lee, 2018).\n\nMore text."  # text of the paper, kept
    prompt = citation_program.render({"query_str": "q", "context_str": caption})
    assert context_of(prompt) == caption


def test_teacher_runs_as_a_program_teacher():
    llm = CallableLLM(citation_teacher, model_id="rules:citations")
    inputs = {"context_str": CONTEXT, "query_str": "List the citations."}
    assert citation_program.run(llm, inputs) == extract_citations(CONTEXT)


def test_teacher_needs_a_user_message():
    with pytest.raises(UserError, match="user message"):
        citation_teacher([{"role": "system", "content": "hi"}])


def test_the_teacher_writes_the_authors_as_cited_where_asked():
    messages = citation_program.messages({"context_str": CONTEXT, "query_str": "q"})
    answer = Response.model_validate_json(citation_teacher(messages, authors="as cited"))
    assert [c.author for c in answer.citations] == [
        "Rocktäschel et al.",
        "Hu et al.",
        "Aghajanyan et al.",
    ]
    assert citation_pairs(answer) == citation_pairs(
        Response.model_validate_json(citation_teacher(messages))
    )
    with pytest.raises(UserError, match="as cited"):
        extract_citations(CONTEXT, authors="all")  # type: ignore[arg-type]


# --- scoring ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "Ouyang",
        "ouyang",
        "Ouyang et al.",
        "Ouyang etal",
        "Ouyang et",
        "L. Ouyang",
        "Long Ouyang",
        "Ouyang, L.",
    ],
)
def test_author_key_forgives_spelling(spelling):
    assert author_key(spelling) == "ouyang"


def test_author_key_drops_accents_particles_and_punctuation():
    assert author_key("Rücklé") == author_key("Ruckle") == "ruckle"
    assert author_key("van der Maaten") == "maaten"
    assert author_key("Allen-Zhu & Li") == "allenzhu"
    assert author_key("Rebuf\ufb01") == "rebuffi"
    assert author_key("O\u2019Neil") == "oneil"


def test_author_key_reads_a_surname_copied_with_the_pdfs_spacing_accents():
    # pymupdf's "R\u00a8uckl\u00b4e", copied from the context by a student, is Rücklé.
    assert author_key("R\u00a8uckl\u00b4e") == "ruckle"
    assert citation_pairs(
        Response(citations=[Citation(author="R\u00a8uckl\u00b4e", year=2020, desc="x")])
    ) == {("ruckle", 2020)}


def response(*pairs: tuple[str, int]) -> Response:
    return Response(citations=[Citation(author=a, year=y, desc="") for a, y in pairs])


def test_pairs_in_context_are_normalized():
    assert pairs_in_context("as (Rücklé et al., 2020a) and Smith (2019) show") == {
        ("ruckle", 2020),
        ("smith", 2019),
    }
    assert citation_pairs(None) == set()


def test_score_counts_pairs_over_all_examples():
    score = score_citations(
        [response(("Ouyang", 2022), ("Bai", 2022)), response(("Wu", 2021))],
        [{("ouyang", 2022), ("bai", 2022)}, {("lee", 2018), ("kim", 2019), ("Wu", 2020)}],
    )
    assert (score.true_positives, score.predicted, score.gold, score.n) == (2, 3, 5, 2)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(2 / 5)
    assert score.f1 == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))


def test_unparseable_answers_predict_nothing():
    score = score_citations([None, response(("Smith", 2020))], [{("x", 2000)}, {("smith", 2020)}])
    assert score.unparseable == 1
    assert (score.precision, score.recall) == (1.0, 0.5)
    assert score.f1 == pytest.approx(2 / 3)


def test_gold_is_normalized_and_duplicates_count_once():
    score = score_citations(
        [response(("Rücklé et al.", 2020), ("Ruckle", 2020))], [{("R\u00fcckl\u00e9", 2020)}]
    )
    assert (score.true_positives, score.predicted, score.gold) == (1, 1, 1)


def test_empty_gold():
    nothing = score_citations([response()], [set()])
    assert nothing == CitationScore(1.0, 1.0, 1.0, 1, 0, 0, 0, 0)
    invented = score_citations([response(("Smith", 2020))], [set()])
    assert (invented.precision, invented.recall, invented.f1) == (0.0, 0.0, 0.0)
    missed = score_citations([None], [{("smith", 2020)}])
    assert (missed.precision, missed.recall, missed.f1) == (0.0, 0.0, 0.0)
    assert score_citations([], []).n == 0


def test_score_needs_one_prediction_per_gold_set():
    with pytest.raises(UserError, match="one prediction"):
        score_citations([None], [set(), set()])


def test_a_narrative_page_cites_narratively_more_often_than_a_parenthetical_one(pages):
    """The gap `narrative_variants` is for: lora writes "Li & Liang (2021)" where
    instructgpt writes "(Li & Liang, 2021; ...)". Two pages written in the two styles,
    counted as benchmarks/citation_rules.py counts the papers."""
    year = r"(?:1[89]|20)\d\d[a-z]?"
    narrative = re.compile(rf"[A-Z][\w-]+(?: et al\.| (?:&|and) [A-Z][\w-]+)? \({year}\)")
    bracket = re.compile(rf"\([A-Z][^()\d]*?,\s+{year}(?:;\s*[A-Z][^()\d]*?,\s+{year})*\)")
    counts = {
        name: tuple(len(shape.findall(clean_text(pages[name]))) for shape in (narrative, bracket))
        for name in ("alignment", "adaptation")
    }
    assert counts == {"alignment": (2, 15), "adaptation": (16, 3)}


def test_the_table_shows_answers_closed_early_only_where_a_grammar_closed_one():
    import dataclasses

    from structune.evaluate.citations import citation_scores, citation_table
    from structune.evaluate.compare import Answer, Comparison, ModelScore

    inputs = [{"context_str": "As shown by Smith et al. (2020), it works.", "query_str": "?"}]
    answer = response(("Smith", 2020)).model_dump_json()
    comparison = Comparison("citations")
    for name, closed in [("plain", 0), ("grammar", 1)]:
        comparison.scores.append(ModelScore(name, 1, 1, 1, 0, 1.0, 20, closed_early=closed))
        comparison.answers[name] = [Answer(inputs[0], answer, True, True, False, None)]
    table = citation_table(comparison, citation_scores(comparison, inputs))
    header, _, plain, grammar = table.splitlines()
    assert "closed early" in header
    assert plain.split()[1:] == ["1/1", "1/1", "0", "0", "1.00", "1.00", "1.00", "1.0"]
    assert grammar.split()[4] == "1"
    comparison.scores[1] = dataclasses.replace(comparison.scores[1], closed_early=0)
    assert "closed early" not in citation_table(comparison, citation_scores(comparison, inputs))


def test_schema_valid_valid_and_misses_read_the_same_answers_as_scored():
    from structune.evaluate.citations import citation_misses, citation_scores, citation_table
    from structune.evaluate.compare import compare
    from structune.tasks.citations import sourced_citation_program

    inputs = [{"context_str": "As shown by Smith et al. (2020), it works.", "query_str": "?"}]
    answers = {
        "copies": response(("Smith", 2020)).model_dump_json(),
        "invents": response(("Jones", 2019)).model_dump_json(),  # a Response, not sourced
        "breaks": '{"citations":[{"author":"Smith","year":"twenty"}]}',
    }
    models = {name: CallableLLM(lambda _, text=text: text) for name, text in answers.items()}
    comparison = compare(sourced_citation_program, models, inputs)
    rows = citation_table(comparison, citation_scores(comparison, inputs)).splitlines()
    assert rows[0].split()[1:3] == ["schema-valid", "valid"]
    assert [row.split()[1:3] for row in rows[2:]] == [
        ["1/1", "1/1"],
        ["1/1", "0/1"],
        ["0/1", "0/1"],
    ]
    # the misses, as scored: an unparseable answer names nothing
    assert citation_misses(comparison, inputs) == {
        "copies": [],
        "invents": [{"context": 0, "missed": [("smith", 2020)], "not cited": [("jones", 2019)]}],
        "breaks": [{"context": 0, "missed": [("smith", 2020)], "not cited": []}],
    }


def test_errors_are_counted_by_kind_and_read_back_from_a_saved_comparison():
    from structune.evaluate.citations import citation_errors
    from structune.evaluate.compare import Comparison, compare

    context = (
        "Prefix tuning (Li & Liang, 2021) and adapters (Rebuffi et al., 2017; Houlsby et "
        "al., 2019) fit E2E (Novikova et al., 2017), as Gliwa et al. (2019) found."
    )
    inputs = [{"context_str": context, "query_str": "?"}]
    answers = {
        "student": response(
            ("Li", 2021),
            ("Liang", 2021),  # the second author of a cited work
            ("Rebbuffi", 2017),  # a near copy of a missed author: one mistake, not two
            ("Houlsby", 2020),  # a cited author with another year
            ("E2E", 2017),  # another word of the context, where Novikova stands
            ("Siegel", 2019),  # a name the context does not hold, where Gliwa stands
        ).model_dump_json(),
        "broken": '{"citations":[{"author":"Li"',
    }
    models = {name: CallableLLM(lambda _, text=text: text) for name, text in answers.items()}
    comparison = compare(citation_program, models, inputs)
    expected = {
        "student": {
            "co-author": 1,
            "misspelled": 1,
            "wrong year": 1,
            "other word": 1,
            "invented": 1,
            "dropped": 3,  # Houlsby 2019, Novikova, Gliwa
        },
        "broken": {"unparseable": 5},
    }
    assert citation_errors(comparison, inputs) == expected
    saved = Comparison.from_dict(json.loads(json.dumps(comparison.to_dict())))
    assert saved == comparison
    assert citation_errors(saved, inputs) == expected
