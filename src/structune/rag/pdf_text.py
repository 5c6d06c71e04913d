"""A PDF's text, read in a child process under bounds on memory, time and size.

A PDF is untrusted input, and MuPDF is C code that inflates whatever a file asks it to: a
4 MB stream can inflate to 4 GB, a page can hold millions of text operators, a bad
structure can crash it. So the text is read in a child Python process that holds MuPDF
alone, under an address-space limit (`READ_MEMORY_BYTES`) and a time budget
(`READ_TIMEOUT_S`); inside it, the streams MuPDF would inflate are measured (inflated in
pieces and thrown away) against `MAX_STREAM_BYTES` and `MAX_CONTENT_BYTES` before any page
is read, and the text is capped per page and per document. A hostile file is refused with a
reason; the calling process never holds its memory and never dies with it.

The child answers on stdout with one JSON object; the parent turns every other outcome (a
kill, a crash, a timeout) into an error that says what happened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

from structune.errors import BackendError, UserError

log = logging.getLogger(__name__)

MAX_PAGES = 2000
"""The most pages `read_pdf` accepts: bounds one ingest's time and memory (~1 min of text)."""

# Bounds on reading one PDF. Real papers sit far below each (three arXiv papers measured:
# under 5,000 characters a page, no stream over 12 MB inflated, ~0.5 s to read 68 pages, a
# reader process of ~160 MB); a file that crosses one is crafted or broken.
MAX_PAGE_CHARS = 200_000
"""The most text one page may yield (a dense page of small print holds ~10,000 characters)."""
MAX_TEXT_CHARS = 20_000_000
"""The most text one PDF may yield: 2,000 dense pages; more would take hours to embed."""
MAX_STREAM_BYTES = 128 * 2**20
"""The most bytes one stream that text extraction inflates (page content, form, font, cmap)
may inflate to; images are not inflated to read text, so they are not held to it."""
MAX_CONTENT_BYTES = 2**30
"""The most page content all pages together may inflate to, a stream counted once per page
that uses it: one small stream shared by 2,000 pages must not cost 2,000 inflations."""
READ_MEMORY_BYTES = 2**30
"""The address space of the reader process (it starts at ~90 MB)."""
READ_TIMEOUT_S = 120.0
"""Wall time allowed to read one PDF (2,000 real pages take ~15 s here)."""

_INSTALL_HINT = "pip install 'structune[llama-index]'"


# --- reading text in a child process ----------------------------------------------------
#
# The parent sends the PDF's bytes on stdin; the child answers one JSON object on stdout:
# {"title", "pages", "warnings"}, or {"error"} with a UserError's message. Anything else
# (a kill, a crash, an exit without an answer) is the parent's to explain.

_WORKER = "from structune.rag.pdf_text import _pdf_text_worker; _pdf_text_worker()"
_CRAFTED = "the PDF is probably crafted or broken; if it is genuine, re-export it as PDF"
# MuPDF's message when an allocation fails ("realloc (2437674759 bytes) failed").
_ALLOCATION_FAILED = re.compile(r"\b(?:m|c|re)alloc \(\d+ bytes\) failed")


def read_pdf_text(data: bytes, name: str) -> dict[str, Any]:
    """The PDF's title, page texts and warnings, read by `_pdf_text_worker` in a child.

    Raises:
        UserError: the PDF is damaged, encrypted, too large, or crosses a bound (why, and
            what to do, in the message).
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, name],
            input=data,
            capture_output=True,
            timeout=READ_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed the child
        raise UserError(
            f"reading the text of {name} took over {READ_TIMEOUT_S:.0f} s and was stopped; "
            f"{_CRAFTED} (or split it) and ingest the copy"
        ) from None
    answer = _parse_answer(done.stdout)
    if answer is not None and "error" in answer:
        raise UserError(answer["error"])
    if answer is not None and done.returncode == 0:
        return answer
    stderr = done.stderr.decode(errors="replace")
    if done.returncode < 0:  # killed by a signal: a crash inside MuPDF, or the OOM killer
        raise UserError(
            f"the PDF reader crashed on {name} ({signal.Signals(-done.returncode).name}); "
            f"{_CRAFTED} and ingest the copy"
        )
    if "MemoryError" in stderr or _ALLOCATION_FAILED.search(stderr):
        raise UserError(_too_much_memory(name))
    raise BackendError(
        f"the PDF reader process failed on {name} (exit status {done.returncode}): "
        f"{stderr.strip()[-2000:]}"
    )


def _parse_answer(stdout: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(stdout)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _too_much_memory(name: str) -> str:
    return (
        f"reading the text of {name} needs more than {READ_MEMORY_BYTES / 2**30:.1f} GiB of "
        f"memory and was stopped; {_CRAFTED} and ingest the copy"
    )


def _pdf_text_worker() -> None:
    """The child's main: limit itself, read the PDF from stdin, answer on stdout."""
    _limit_address_space(READ_MEMORY_BYTES)
    # MuPDF and PyMuPDF print warnings to stdout: send fd 1 to stderr, answer on a copy.
    answer_channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    # pymupdf imports the optional pymupdf.layout (onnxruntime, numpy) when installed:
    # ~1.5 s and ~450 MB of address space that plain text extraction never uses.
    sys.modules["pymupdf.layout"] = None  # type: ignore[assignment]
    name = sys.argv[1]
    try:
        answer: dict[str, Any] = _extract_text(sys.stdin.buffer.read(), name)
    except UserError as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        answer = {"error": _too_much_memory(name)}
    with answer_channel:
        json.dump(answer, answer_channel)


def _limit_address_space(limit: int) -> None:
    try:
        import resource  # POSIX only
    except ImportError:  # pragma: no cover - Windows: the time budget still holds
        return
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):  # pragma: no cover - a lower hard limit is already set
        log.debug("cannot limit the reader's address space to %d bytes", limit)


def _extract_text(data: bytes, name: str) -> dict[str, Any]:
    try:
        import pymupdf
    except ImportError:
        raise UserError(f"reading PDFs needs pymupdf: {_INSTALL_HINT}") from None

    damaged = f"{name} is damaged and cannot be read; re-download it or re-export it as PDF"
    # MuPDF fails on what it cannot parse at any step: opening, counting pages (a lying
    # /Count), loading a page (a cycle in the page tree). PyMuPDF raises RuntimeError
    # (FileDataError) for some failures, its bindings' FzErrorBase subclasses for others.
    failures = (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase)
    try:
        with pymupdf.open(stream=data, filetype="pdf") as doc:
            warnings = _check_document(doc, name, damaged)
            _check_inflated_sizes(doc, name)
            texts = _page_texts(doc, name)
            if warnings and not any(text.strip() for text in texts):
                # Repaired and textless: a truncated download or a broken file, not a scan.
                raise UserError(f"{damaged} (no text could be recovered)")
            title = (doc.metadata or {}).get("title", "").strip() or Path(name).stem
    except failures as exc:
        raise _reading_failed(exc, name, damaged) from None
    return {"title": title, "pages": texts, "warnings": warnings}


def _reading_failed(exc: Exception, name: str, damaged: str) -> UserError:
    if _ALLOCATION_FAILED.search(str(exc)):  # MuPDF hit the address-space limit
        return UserError(_too_much_memory(name))
    return UserError(f"{damaged} ({exc})")


def _check_document(doc: Any, name: str, damaged: str) -> list[str]:
    """Refuse what cannot be read; the warnings to pass on about what can."""
    if doc.needs_pass:
        raise UserError(
            f"{name} is password-protected; decrypt it first, e.g. "
            f"`qpdf --decrypt --password=PASSWORD {name} decrypted.pdf`, and ingest the copy"
        )
    if doc.page_count == 0:
        raise UserError(f"{damaged} (no page could be recovered)")
    if doc.page_count > MAX_PAGES:
        raise UserError(
            f"{name} has {doc.page_count:,} pages, more than the limit of {MAX_PAGES:,}; "
            "split it (e.g. `qpdf --split-pages=1000 in.pdf part.pdf`) and index the parts "
            "in separate folders"
        )
    if doc.is_repaired:
        # MuPDF rebuilt a broken structure (a truncated download, a bad xref table); the text
        # is often complete, so warn rather than refuse.
        return [f"{name} is damaged; PyMuPDF repaired it, so some text may be missing"]
    return []


def _check_inflated_sizes(doc: Any, name: str) -> None:
    """Refuse decompression bombs before MuPDF inflates them while extracting text.

    Every stream but images and attachments (which text extraction does not inflate) must
    inflate to at most `MAX_STREAM_BYTES`, and the page contents, each stream counted once
    per page that draws it, to at most `MAX_CONTENT_BYTES` together. Only FlateDecode (the
    filter of nearly every stream) is measured; a bomb behind another filter is left to the
    reader's memory limit and time budget.
    """
    inflated: dict[int, int] = {}

    def size(xref: int) -> int:
        if xref not in inflated:
            inflated[xref] = _inflated_size(doc, xref, MAX_STREAM_BYTES)
        return inflated[xref]

    for xref in range(1, doc.xref_length()):
        inflated_for_text = doc.xref_is_stream(xref) and not _not_inflated_for_text(doc, xref)
        if inflated_for_text and size(xref) > MAX_STREAM_BYTES:
            raise UserError(
                f"{name}: object {xref} inflates to more than {MAX_STREAM_BYTES // 2**20} MiB "
                f"(a decompression bomb?); {_CRAFTED} and ingest the copy"
            )
    content = 0
    for page in doc.pages():
        content += sum(size(xref) for xref in page.get_contents())
        if content > MAX_CONTENT_BYTES:
            raise UserError(
                f"{name}: the content of its first {page.number + 1:,} pages inflates to more "
                f"than {MAX_CONTENT_BYTES // 2**20:,} MiB (a decompression bomb?); {_CRAFTED} "
                "and ingest the copy"
            )


def _not_inflated_for_text(doc: Any, xref: int) -> bool:
    """Images, attachments and XMP metadata: streams that reading text leaves compressed."""
    if doc.xref_get_key(xref, "Subtype")[1] == "/Image":
        return True
    return doc.xref_get_key(xref, "Type")[1] in ("/EmbeddedFile", "/Metadata")


def _inflated_size(doc: Any, xref: int, limit: int) -> int:
    """The stream's inflated length, counted up to just past `limit` in 1 MiB pieces that are
    thrown away; 0 for a filter other than FlateDecode alone (not measured)."""
    kind, value = doc.xref_get_key(xref, "Filter")
    raw = doc.xref_stream_raw(xref) or b""
    if kind == "null":
        return len(raw)
    if value.strip("[] ") not in ("/FlateDecode", "/Fl"):
        return 0
    inflater = zlib.decompressobj()
    size, pending = 0, raw
    try:
        while size <= limit:
            piece = inflater.decompress(pending, 2**20)
            pending = inflater.unconsumed_tail
            if not piece and not pending:
                break
            size += len(piece)
    except zlib.error:  # corrupt data: MuPDF stops there too
        pass
    return size


def _page_texts(doc: Any, name: str) -> list[str]:
    import pymupdf

    # Ligatures spelt out: "ﬁne-tuning" is "fine-tuning" to the tokenizer and to a search.
    flags = pymupdf.TEXTFLAGS_TEXT & ~pymupdf.TEXT_PRESERVE_LIGATURES
    texts: list[str] = []
    total = 0
    for page in doc.pages():
        text = page.get_text(flags=flags)
        if len(text) > MAX_PAGE_CHARS:
            raise UserError(
                f"{name}: page {page.number + 1} holds {len(text):,} characters of text, more "
                f"than the limit of {MAX_PAGE_CHARS:,} for one page; {_CRAFTED} and ingest "
                "the copy"
            )
        total += len(text)
        if total > MAX_TEXT_CHARS:
            raise UserError(
                f"{name} holds more than {MAX_TEXT_CHARS:,} characters of text (reached at "
                f"page {page.number + 1}); split it (e.g. `qpdf --split-pages=500 in.pdf "
                "part.pdf`) and index the parts in separate folders"
            )
        texts.append(text)
    return texts
