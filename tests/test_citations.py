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
    folder = Path(__file__).parent / "data" / "citation_pages"
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


def test_variants_swap_every_cited_surname_and_year_and_keep_the_rest():
    from structune.tasks.citation_variants import citation_variants

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
    from structune.tasks.citation_variants import citation_variants, long_list_variants

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
    from structune.tasks.citation_variants import citation_variants, made_up_surnames

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
    from structune.tasks.citation_variants import nested_variants

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
    from structune.tasks.citation_variants import yearless_variants

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


def test_narrative_variants_write_bracketed_citations_narratively_and_cite_the_same_works():
    from structune.tasks.citation_variants import narrative_variants

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


def test_variants_write_et_al_citations_with_two_authors_where_asked():
    from structune.tasks.citation_variants import citation_variants

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


def test_inserted_variants_cite_where_the_text_did_not_and_the_teacher_reads_them():
    from structune.tasks.citation_variants import inserted_variants

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
    from structune.tasks.citation_variants import long_list_variants

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
