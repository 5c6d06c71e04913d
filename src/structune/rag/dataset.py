"""A citation dataset from one PDF: every chunk asked about, split by retrieved context.

`document_inputs` ingests a PDF, asks one passage question per chunk and retrieves each
question's top-k chunks into program inputs (`{"query_str", "context_str"}`).
`split_by_context` then splits them so that no test input's retrieved context appears in
training: the student is scored on text it never saw, as the issue's numbers require.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from structune.errors import UserError
from structune.rag.answer import retrieved_inputs
from structune.rag.ingest import IngestSummary, ingest, load_index
from structune.rag.questions import passage_questions


@dataclass(frozen=True)
class DocumentInputs:
    """Program inputs over one document.

    Attributes:
        inputs: one `{"query_str", "context_str"}` per chunk.
        retrieval_hit_rate: share of questions whose top-k holds the chunk they quote.
        ingest: what ingesting the PDF did.
    """

    inputs: list[dict[str, str]]
    retrieval_hit_rate: float
    ingest: IngestSummary


def document_inputs(
    pdf: str | Path,
    index_dir: str | Path,
    *,
    chunk_size: int,
    chunk_overlap: int,
    top_k: int = 1,
    progress: bool = True,
) -> DocumentInputs:
    """Ingest `pdf` (or reuse its index) and build one retrieved input per chunk."""
    summary = ingest(
        pdf, index_dir, chunk_size=chunk_size, chunk_overlap=chunk_overlap, progress=progress
    )
    index = load_index(index_dir)
    questions = passage_questions(list(index.docstore.docs.values()))
    inputs = retrieved_inputs(index, questions, top_k=top_k)
    hits = sum(
        index.docstore.get_node(q.node_id).get_content() in given["context_str"]
        for q, given in zip(questions, inputs, strict=True)
    )
    return DocumentInputs(inputs, hits / len(inputs), summary)


def split_by_context(
    inputs: list[dict[str, str]], *, train: int, test: int, seed: int = 0
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Shuffle, take `train` inputs, then up to `test` inputs whose context none of them has.

    Raises:
        UserError: fewer inputs than `train` + 1, so nothing would be left to test on.
    """
    if len(inputs) <= train:
        raise UserError(
            f"the document gives {len(inputs)} inputs, not enough for {train} training "
            "examples and a test set; use a longer PDF or a smaller --chunk-size"
        )
    shuffled = list(inputs)
    random.Random(seed).shuffle(shuffled)
    seen = {i["context_str"] for i in shuffled[:train]}
    unseen = [i for i in shuffled[train:] if i["context_str"] not in seen]
    return shuffled[:train], unseen[:test]
