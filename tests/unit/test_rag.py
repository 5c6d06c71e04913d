"""Structured RAG over a typeset PDF (the suite's test paper, `tests/papers.py`): questions,
retrieval into program inputs, recording through RAG, answers with their sources, the
notebook's query engine, and the CLI."""

from __future__ import annotations

import json

import pytest
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import TextNode

from papers import FILE_NAME, SECTIONS
from structune import UserError
from structune.cli import main
from structune.integrations.llama_index import StructuneFinetuningHandler, StructuneLLM
from structune.llms.callable import CallableLLM
from structune.rag.answer import ask, retrieved_inputs
from structune.rag.ingest import ingest, load_index
from structune.rag.questions import (
    HEADING_QUESTION,
    Question,
    generate_questions,
    heading_questions,
    load_questions,
    save_questions,
)
from structune.record import DatasetStore, record
from structune.tasks.citations import (
    Response,
    citation_pairs,
    citation_program,
    citation_teacher,
    pairs_in_context,
    sourced_citation_program,
)

teacher = CallableLLM(citation_teacher, model_id="rules:citations")


@pytest.fixture(scope="module")
def index_dir(test_paper_pdf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rag") / "paper"
    ingest(test_paper_pdf, folder, chunk_size=256, chunk_overlap=20, progress=False)
    return folder


@pytest.fixture(scope="module")
def paper_windows(test_paper_pdf, index_dir):
    """The paper's 256-token windows, each its own question's context."""
    from structune.rag.dataset import document_inputs

    return document_inputs(
        test_paper_pdf,
        index_dir,
        chunk_size=256,
        chunk_overlap=20,
        retrieve_context=False,
        progress=False,
    )


@pytest.fixture(scope="module")
def index(index_dir):
    return load_index(index_dir)


@pytest.fixture(scope="module")
def nodes(index):
    return list(index.docstore.docs.values())


def test_heading_questions_follow_numbered_sections_only():
    nodes = [
        TextNode(text="intro\n1\nIntroduction\nLarge models (Brown et al., 2020) ...", id_="a"),
        TextNode(text="0.75\nWin rate against SFT\nTable 2\n3.1\nHigh-level methodology", id_="b"),
        TextNode(text="1\nIntroduction\nrepeated heading\n2\nTable 3: prompt lengths", id_="c"),
    ]
    assert heading_questions(nodes) == [
        Question("Which citations are mentioned in the section about Introduction?", "a"),
        Question("Which citations are mentioned in the section about High-level methodology?", "b"),
    ]
    with pytest.raises(UserError, match="no numbered section headings"):
        heading_questions([TextNode(text="plain prose without sections")])


def test_heading_questions_over_the_test_paper(nodes):
    questions = heading_questions(nodes)
    texts = [q.question for q in questions]
    headings = [h.partition(" ")[2] for h, _ in SECTIONS if h[0].isdigit()]
    assert texts == [HEADING_QUESTION.format(heading=h) for h in headings]
    assert {q.node_id for q in questions} <= {n.node_id for n in nodes}


def test_questions_save_and_reload_and_bad_files_are_named(tmp_path):
    questions = [Question("Which works on RLHF are cited?", "n1"), Question("Qui? «é»", "n2")]
    save_questions(questions, tmp_path / "q.jsonl")
    assert load_questions(tmp_path / "q.jsonl") == questions
    (tmp_path / "bad.jsonl").write_text('{"question": "ok", "node_id": "1"}\n{"q": 1}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2"):
        load_questions(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="not found"):
        load_questions(tmp_path / "missing.jsonl")


def test_an_llm_writes_questions_per_chunk_through_llama_index(nodes):
    prompts = []

    def writer(messages):
        prompts.append(messages[-1]["content"])
        return "1. Which citations cover pretraining data?\n2. Who worked on RLHF?"

    llm = StructuneLLM(backend=CallableLLM(writer))
    questions = generate_questions(nodes[:3], llm, per_chunk=2, progress=False)
    assert [q.node_id for q in questions] == [n.node_id for n in nodes[:3] for _ in range(2)]
    assert questions[1].question == "Who worked on RLHF?"
    assert all("It contains citations." in p for p in prompts)  # the notebook's prompt


def test_recording_through_rag_keeps_the_retrieved_context_in_the_prompt(index, tmp_path):
    questions = ["Which citations are mentioned about reinforcement learning with human feedback?"]
    inputs = retrieved_inputs(index, questions, top_k=1)
    assert inputs[0]["query_str"] == questions[0] and len(inputs[0]["context_str"]) > 200
    with DatasetStore(tmp_path / "d.db") as store:
        summary = record(citation_program, teacher, inputs, store=store, progress=False)
        (example,) = store.examples("citations")
    assert summary.valid == 1
    assert inputs[0]["context_str"] in example.messages[-1]["content"]
    answer = Response.model_validate(example.parsed)
    assert citation_pairs(answer) == pairs_in_context(inputs[0]["context_str"])


def test_ask_returns_the_answer_and_its_sources(index):
    (answer,) = ask(index, ["Which works on scaling laws are cited?"], teacher, citation_program)
    assert isinstance(answer.answer, Response) and answer.error is None
    assert len(answer.sources) == 1
    assert answer.inputs["context_str"].endswith(answer.sources[0].node.get_content())


def test_ask_holds_extracted_fields_to_each_questions_own_chunks(index, tiny_model_dir):
    from structune.llms.local import LocalLLM

    question = "Which works on scaling laws are cited?"
    (copied,) = ask(index, [question], teacher, sourced_citation_program)
    assert copied.error is None  # the rule-based teacher copies from the chunk

    invented = '{"citations":[{"author":"Nobody et al.","year":1999,"desc":"x"}]}'
    inventor = CallableLLM(lambda messages: invented, model_id="inventor")
    (caught,) = ask(index, [question], inventor, sourced_citation_program)
    assert caught.answer is None and "Nobody et al." in caught.error

    # under the grammar each row copies from its own chunks (a random tiny model here)
    random_model = LocalLLM.load(str(tiny_model_dir))
    questions = [question, "Which citations are mentioned about RLHF?"]
    for answer in ask(
        index, questions, random_model, sourced_citation_program, constrained=True, max_tokens=48
    ):
        assert answer.error is None or answer.truncated
        for citation in answer.answer.citations if answer.answer else []:
            assert citation.author in answer.inputs["context_str"]


def test_the_notebooks_query_engine_with_output_cls_records_context_and_structure(index):
    handler = StructuneFinetuningHandler()
    callback_manager = CallbackManager([handler])
    llm = StructuneLLM(backend=teacher, callback_manager=callback_manager)
    question = "Which citations are mentioned in the section about Pretraining?"

    # LlamaIndex's pitfall behind "Wrote 0 examples": the query engine swaps in its own
    # callback manager, so the handler hears nothing and says how to fix it
    index.as_query_engine(output_cls=Response, llm=llm, similarity_top_k=1).query(question)
    with pytest.raises(UserError, match=r"Settings\.callback_manager"):
        handler.save_finetuning_events("never-written.jsonl")

    Settings.callback_manager = callback_manager  # the notebook's ServiceContext(callback_manager=)
    try:
        engine = index.as_query_engine(output_cls=Response, llm=llm, similarity_top_k=1)
        response = engine.query(question)
    finally:
        Settings.callback_manager = CallbackManager()
    assert isinstance(response.response, Response)
    assert len(response.source_nodes) == 1
    context = response.source_nodes[0].node.get_content()
    assert citation_pairs(response.response) == pairs_in_context(context)
    (event,) = handler.get_finetuning_events().values()
    assert context in event["messages"][-1].content  # the student will learn context → JSON


def test_the_cli_runs_the_whole_path(index_dir, test_paper_pdf, tmp_path, capsys):
    assert (
        main(
            [
                "ingest",
                str(test_paper_pdf),
                "--index",
                str(index_dir),
                "--chunk-size",
                "256",
                "--chunk-overlap",
                "20",
            ]
        )
        == 0
    )
    assert "already indexed" in capsys.readouterr().out
    questions, inputs = tmp_path / "q.jsonl", tmp_path / "inputs.jsonl"
    assert main(["questions", "--index", str(index_dir), "--out", str(questions)]) == 0
    assert (
        main(
            [
                "retrieve",
                "--index",
                str(index_dir),
                "--questions",
                str(questions),
                "--out",
                str(inputs),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in inputs.read_text().splitlines()]
    assert len(rows) == len(load_questions(questions)) and set(rows[0]) == {
        "query_str",
        "context_str",
    }
    capsys.readouterr()
    assert (
        main(
            [
                "ask",
                "Which works are cited on pretraining?",
                "--index",
                str(index_dir),
                "--model",
                "offline:citations",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert '"citations"' in out and f"source: {FILE_NAME}" in out

    assert main(["ask", "   ", "--index", str(index_dir), "--model", "offline:citations"]) == 1
    assert "question is empty" in capsys.readouterr().err


def test_the_sample_paper_is_a_real_pdf_with_author_year_citations(tmp_path):
    from structune.rag.ingest import read_pdf
    from structune.rag.sample import write_sample_pdf
    from structune.tasks.citations import extract_citations

    pages = read_pdf(write_sample_pdf(tmp_path / "sample.pdf"))
    text = "\n".join(page.text for page in pages)
    assert len(pages) == 12 and "1\nIntroduction" in text
    assert len(extract_citations(text).citations) >= 20


def test_split_by_region_keeps_every_test_context_out_of_the_training_text(
    paper_windows, test_paper_pdf, tmp_path
):
    from structune.rag.dataset import document_inputs, held_out_stretches, split_by_region
    from structune.rag.sample import write_sample_pdf

    windows = paper_windows
    assert windows.retrieval_hit_rate == 1.0  # each chunk is its own question's context
    retrieved = document_inputs(
        test_paper_pdf, tmp_path / "small", chunk_size=128, chunk_overlap=0, progress=False
    )
    held = held_out_stretches(windows.length, stretches=5, every=5)  # the third fifth
    train, test = split_by_region([windows], retrieved, held_out=held)
    assert train and test and len(train) < len(windows.inputs)
    training_text = "\n".join(i["context_str"] for i in train)
    for given in test:
        # The chunk's own text, after LlamaIndex's metadata header.
        text = given["context_str"].split("\n\n", 1)[-1]
        pieces = [text[start : start + 40] for start in range(0, len(text) - 40, 40)]
        assert pieces and not any(piece in training_text for piece in pieces)

    other = document_inputs(
        write_sample_pdf(tmp_path / "sample.pdf"),
        tmp_path / "sample",
        chunk_size=128,
        chunk_overlap=0,
        progress=False,
    )
    with pytest.raises(UserError, match="one document"):
        split_by_region([windows], other, held_out=held)


def test_asked_elsewhere_gives_a_share_of_windows_another_windows_question(paper_windows):
    from structune.rag.dataset import asked_elsewhere

    windows = paper_windows.inputs
    # Each window twice, as citation_variants gives: one question, two contexts.
    doubled = windows + [dict(w, context_str=w["context_str"] + " (variant)") for w in windows]
    before = [dict(d) for d in doubled]
    asked = asked_elsewhere(doubled, share=0.5, seed=3)

    assert doubled == before  # the inputs are left as they were
    assert [a["context_str"] for a in asked] == [d["context_str"] for d in doubled]
    moved = [(d, a) for d, a in zip(doubled, asked, strict=True) if d != a]
    assert len(moved) == round(len(doubled) / 2)
    questions = {d["query_str"] for d in doubled}
    for given, now in moved:
        assert now["query_str"] in questions and now["query_str"] != given["query_str"]
    assert asked_elsewhere(doubled, share=0.5, seed=3) == asked
    assert asked_elsewhere(doubled, share=0.0) == doubled

    with pytest.raises(UserError, match="between 0 and 1"):
        asked_elsewhere(doubled, share=1.5)
    with pytest.raises(UserError, match="two different questions"):
        asked_elsewhere([windows[0], dict(windows[0], context_str="other")], share=0.5)


def test_cut_short_keeps_a_windows_metadata_question_and_first_words(paper_windows):
    from structune.rag.dataset import cut_short
    from structune.tasks.citations import extract_citations

    windows = paper_windows.inputs
    before = [dict(w) for w in windows]
    cut = cut_short(windows, count=40, words=(20, 30), seed=5)

    assert windows == before and len(cut) == 40

    for short in cut:
        header, _, text = short["context_str"].partition("\n\n")
        assert header.startswith("file_name: ")  # LlamaIndex's metadata lines, kept whole
        assert 20 <= len(text.split()) <= 30
        # the start of a window of the same question, line breaks and all (two windows may
        # open alike and share a question)
        assert any(
            w["query_str"] == short["query_str"]
            and w["context_str"].startswith(short["context_str"])
            for w in windows
        )
    # the teacher answers each cut context on its own: some still cite, some no longer do
    cited = [bool(extract_citations(c["context_str"]).citations) for c in cut]
    assert any(cited) and not all(cited)
    assert cut_short(windows, count=40, words=(20, 30), seed=5) == cut
    plain = {"query_str": "q", "context_str": "a\nb  c d"}  # no metadata lines: all text
    assert cut_short([plain], count=1, words=(2, 2)) == [dict(plain, context_str="a\nb")]
    assert cut_short([plain], count=1, words=(9, 9)) == [plain]  # shorter than asked: whole

    with pytest.raises(UserError, match="1 <= low <= high"):
        cut_short(windows, count=1, words=(30, 20))
    with pytest.raises(UserError, match="needs inputs"):
        cut_short([], count=1)
