"""RAG ingest with real parts: real PDFs, PyMuPDF, LlamaIndex storage, the bundled model.

The good PDF is the suite's test paper (`tests/papers.py`, a typeset two-column PDF written
by PyMuPDF); bad PDFs are made here with PyMuPDF.
The one shared index is built with sockets refused and no OpenAI key, so a hidden
download or an OpenAI fallback fails the tests instead of passing unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pymupdf
import pytest

from papers import FILE_NAME, SECTIONS, TITLE, write_test_paper
from structune.errors import UserError
from structune.rag.ingest import (
    MANIFEST_NAME,
    embedding_model,
    ingest,
    load_index,
    read_pdf,
    retrieve,
)
from structune.rag.pdf_text import MAX_PAGES

# --- bad PDFs, each with words its error message must contain ---------------------------


def _missing(folder: Path) -> Path:
    return folder / "missing.pdf"


def _text_file(folder: Path) -> Path:
    path = folder / "notes.pdf"  # the name says PDF, the bytes do not
    path.write_text("just some notes\n")
    return path


def _encrypted(folder: Path) -> Path:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "a secret paragraph")
    path = folder / "locked.pdf"
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user", owner_pw="owner")
    return path


def _truncated(folder: Path) -> Path:
    path = folder / "truncated.pdf"
    data = write_test_paper(folder / FILE_NAME).read_bytes()
    path.write_bytes(data[: len(data) // 5])  # keeps the header and fonts, loses all text
    return path


def _scanned(folder: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page()
    page.draw_rect(pymupdf.Rect(72, 72, 300, 200), color=(0, 0, 0), fill=(0.5, 0.5, 0.5))
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 40, 40), False)
    pixmap.clear_with(200)
    page.insert_image(pymupdf.Rect(72, 250, 272, 450), pixmap=pixmap)
    path = folder / "scan.pdf"
    doc.save(path)
    return path


def _too_long(folder: Path) -> Path:
    doc = pymupdf.open()
    for _ in range(MAX_PAGES + 1):
        doc.new_page()
    path = folder / "huge.pdf"
    doc.save(path)
    return path


BAD_PDFS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "missing": (_missing, ("not found", "path of a PDF")),
    "not a PDF": (_text_file, ("not a PDF", "path of a PDF")),
    "encrypted": (_encrypted, ("password-protected", "decrypt")),
    "corrupt": (_truncated, ("damaged", "re-download")),
    "no text layer": (_scanned, ("no text layer", "OCR")),
    "too many pages": (_too_long, (f"{MAX_PAGES:,}", "split it")),
}


@pytest.mark.parametrize("case", BAD_PDFS)
def test_read_pdf_refuses_bad_input_saying_what_to_do(case: str, tmp_path: Path) -> None:
    make, words = BAD_PDFS[case]
    with pytest.raises(UserError) as caught:
        read_pdf(make(tmp_path))
    for word in words:
        assert word in str(caught.value)


def test_read_pdf_gives_one_document_per_page(test_paper_pdf: Path) -> None:
    pages = read_pdf(test_paper_pdf)
    assert len(pages) == 3
    assert [p.metadata["page"] for p in pages] == [1, 2, 3]
    assert all(p.metadata["file_name"] == FILE_NAME for p in pages)
    words = " ".join(pages[0].text.split())
    assert TITLE in words
    # Columns are read one after the other, not across: each section of the first page
    # comes whole and in order (compared without the line breaks).
    letters = "".join(words.split())
    first_page = "".join("".join(f"{heading}{body}".split()) for heading, body in SECTIONS[:4])
    assert first_page in letters
    # The layout engine set "fi" as a ligature glyph (as LaTeX does); it is spelt out, so
    # the text matches what people type.
    with pymupdf.open(test_paper_pdf) as document:
        assert "\ufb01" in document[0].get_text(flags=pymupdf.TEXT_PRESERVE_LIGATURES)
    assert "our approach to fine-tuning" in words and "\ufb01" not in pages[0].text


def test_a_folder_that_is_not_an_index_is_never_replaced(
    test_paper_pdf: Path, tmp_path: Path
) -> None:
    (tmp_path / "thesis.tex").write_text("my work")
    with pytest.raises(UserError, match="holds no structune index"):
        ingest(test_paper_pdf, tmp_path, progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "my work"


@pytest.mark.parametrize("make", [lambda p: p / "nowhere", lambda p: p])
def test_load_index_without_an_index_says_to_ingest(make: Callable[[Path], Path], tmp_path: Path):
    with pytest.raises(UserError, match=r"run `structune ingest PDF` first"):
        load_index(make(tmp_path))


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_bad_chunk_settings_are_refused(
    size: int, overlap: int, test_paper_pdf: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="chunk_"):
        ingest(test_paper_pdf, tmp_path / "index", chunk_size=size, chunk_overlap=overlap)
    assert not (tmp_path / "index").exists()


# --- the real pipeline -----------------------------------------------------------------


@pytest.fixture(scope="module")
def index_dir(test_paper_pdf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test paper ingested with the notebook's settings, offline and without OpenAI."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("tests forbid network access")

    folder = tmp_path_factory.mktemp("rag") / "paper-index"
    with pytest.MonkeyPatch.context() as patch:
        # Name lookups as well as connections: offline, a lookup fails before any connect.
        patch.setattr(socket, "getaddrinfo", refuse)
        patch.setattr(socket.socket, "connect", refuse)
        patch.delenv("OPENAI_API_KEY", raising=False)
        embedding_model.cache_clear()  # so the model is loaded here, under the guard
        summary = ingest(test_paper_pdf, folder, progress=False)
        retrieve(load_index(folder), "What is Tern?")
    assert attempts == []
    assert (summary.pages, summary.reused) == (3, False)
    assert summary.chunks > 0
    return folder


def _snapshot(folder: Path) -> dict[str, int]:
    """Every file of an index with its modification time: equal snapshots, untouched index."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} | {".": folder.stat().st_ino}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


@pytest.mark.slow
def test_ingest_persists_chunks_and_a_manifest(index_dir: Path, test_paper_pdf: Path) -> None:
    from llama_index.core import Settings

    manifest = json.loads((index_dir / MANIFEST_NAME).read_text())
    assert manifest["key"]["pdf_sha256"] == hashlib.sha256(test_paper_pdf.read_bytes()).hexdigest()
    assert (manifest["key"]["chunk_size"], manifest["key"]["chunk_overlap"]) == (1024, 200)
    assert manifest["key"]["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["embedding"]["dimensions"] == 384
    assert {"llama-index-core", "pymupdf", "torch"} <= manifest["versions"].keys()
    index = load_index(index_dir)
    assert len(index.docstore.docs) == manifest["chunks"]
    assert all(n.metadata["file_name"] == FILE_NAME for n in index.docstore.docs.values())
    # Nothing resolved LlamaIndex's global defaults (an OpenAI LLM and embedding).
    assert Settings._llm is None and Settings._embed_model is None
    assert _leftovers(index_dir) == []


@pytest.mark.slow
def test_a_second_ingest_of_the_same_pdf_reuses_the_index(index_dir: Path, test_paper_pdf: Path):
    before = _snapshot(index_dir)
    again = ingest(test_paper_pdf, index_dir, progress=False)
    assert again.reused and again.stage_seconds == {}
    assert again.chunks == len(load_index(index_dir).docstore.docs)
    assert _snapshot(index_dir) == before


@pytest.mark.parametrize(
    ("question", "phrase"),
    [
        ("What are the Tern-Chat models optimized for?", "optimized for dialogue"),
        ("By how much was the pretraining corpus of Tern grown?", "by 40%"),
    ],
)
@pytest.mark.slow
def test_retrieve_finds_the_chunk_holding_the_answer(index_dir: Path, question: str, phrase: str):
    (best,) = retrieve(load_index(index_dir), question)
    assert phrase in best.node.get_content()


@pytest.mark.slow
def test_retrieve_refuses_a_blank_question(index_dir: Path) -> None:
    with pytest.raises(UserError, match="question is empty"):
        retrieve(load_index(index_dir), "  \n")


@pytest.mark.parametrize("case", BAD_PDFS)
@pytest.mark.slow
def test_bad_input_leaves_the_previous_index_usable(case: str, index_dir: Path, tmp_path: Path):
    before = _snapshot(index_dir)
    make, _ = BAD_PDFS[case]
    with pytest.raises(UserError):
        ingest(make(tmp_path), index_dir, progress=False)
    assert _snapshot(index_dir) == before
    assert _leftovers(index_dir) == []
    (best,) = retrieve(load_index(index_dir), "What cuts the size of the cache while decoding?")
    assert "grouped-query attention" in best.node.get_content()


@pytest.mark.slow
def test_new_settings_rebuild_and_replace_the_index(test_paper_pdf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "index"
    coarse = ingest(test_paper_pdf, folder, chunk_size=512, chunk_overlap=20, progress=False)
    fine = ingest(test_paper_pdf, folder, chunk_size=128, chunk_overlap=20, progress=False)
    assert not fine.reused and fine.chunks > coarse.chunks
    assert set(fine.stage_seconds) == {"read", "split", "load model", "embed", "index"}
    assert len(load_index(folder).docstore.docs) == fine.chunks
    assert json.loads((folder / MANIFEST_NAME).read_text())["key"]["chunk_size"] == 128
    assert _leftovers(folder) == []


@pytest.mark.slow
def test_the_embedding_model_is_loaded_once_per_process(index_dir: Path) -> None:
    model = embedding_model()
    assert model is embedding_model()
    assert len(model.get_query_embedding("Tern")) == 384


@pytest.mark.slow
def test_an_index_missing_a_file_is_rebuilt(index_dir: Path, test_paper_pdf: Path, tmp_path: Path):
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    (copy / "docstore.json").unlink()
    rebuilt = ingest(test_paper_pdf, copy, progress=False)
    assert not rebuilt.reused
    assert len(load_index(copy).docstore.docs) == rebuilt.chunks
