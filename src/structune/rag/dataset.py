"""A citation dataset from one PDF: every chunk asked about, split so tests are unseen text.

`document_inputs` ingests a PDF, asks one passage question per chunk and retrieves each
question's top-k chunks into program inputs (`{"query_str", "context_str"}`), noting
where in the document each context lies. With `retrieve_context=False` each chunk is its
own question's context (what a perfect retriever returns): ingested at several chunk
sizes and overlaps, one paper yields many more distinct training contexts than its
retrieved top-1 chunks (retrieval returns the same popular chunks for many questions).

Two splits keep the student's test text out of its training text:
`split_by_context` (one chunking: no test context is a training context) and
`split_by_region` (any chunkings of the same PDF: the document is cut into stretches, some
held out; training contexts touch none of them, test contexts lie inside them).

`asked_elsewhere` gives a share of training inputs another input's question, as a
retriever that misses does: a student trained only on contexts that hold the passage their
question quotes learns to answer from the quote. `cut_short` adds contexts as short as a
splitter's last chunk of a document, which windows of one size never give.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structune.errors import UserError
from structune.rag.answer import context_str
from structune.rag.ingest import IngestSummary, ingest, load_index, retrieve
from structune.rag.questions import passage_questions

Span = tuple[int, int]


@dataclass(frozen=True)
class DocumentInputs:
    """Program inputs over one document.

    Attributes:
        inputs: one `{"query_str", "context_str"}` per chunk.
        spans: where each input's context lies in the document's text, as character
            offsets (start, end); for several chunks, from the first's start to the last's end.
        length: characters in the document's text.
        retrieval_hit_rate: share of questions whose top-k holds the chunk they quote.
        ingest: what ingesting the PDF did.
    """

    inputs: list[dict[str, str]]
    spans: list[Span]
    length: int
    retrieval_hit_rate: float
    ingest: IngestSummary


def document_inputs(
    pdf: str | Path,
    index_dir: str | Path,
    *,
    chunk_size: int,
    chunk_overlap: int,
    top_k: int = 1,
    retrieve_context: bool = True,
    progress: bool = True,
) -> DocumentInputs:
    """Ingest `pdf` (or reuse its index) and build one input per chunk: its passage
    question with the top-k retrieved chunks, or with the chunk itself
    (`retrieve_context=False`)."""
    from llama_index.core.schema import NodeWithScore

    summary = ingest(
        pdf, index_dir, chunk_size=chunk_size, chunk_overlap=chunk_overlap, progress=progress
    )
    index = load_index(index_dir)
    # TextNodes, with their offsets in the document's text (start_char_idx, end_char_idx).
    chunks: dict[str, Any] = {node.node_id: node for node in index.docstore.docs.values()}
    questions = passage_questions(list(chunks.values()))
    inputs, spans, hits = [], [], 0
    for question in questions:
        own = chunks[question.node_id]
        sources = (
            retrieve(index, question.question, top_k=top_k)
            if retrieve_context
            else [NodeWithScore(node=own)]
        )
        inputs.append({"query_str": question.question, "context_str": context_str(sources)})
        nodes: list[Any] = [s.node for s in sources]
        spans.append((min(n.start_char_idx for n in nodes), max(n.end_char_idx for n in nodes)))
        hits += own.node_id in {n.node_id for n in nodes}
    length = max(node.end_char_idx for node in chunks.values())
    return DocumentInputs(inputs, spans, length, hits / len(inputs), summary)


def asked_elsewhere(
    inputs: Sequence[dict[str, str]], *, share: float, seed: int = 0
) -> list[dict[str, str]]:
    """`inputs`, a `share` of them (drawn with `seed`) asking another input's question.

    Built with `retrieve_context=False`, every training context holds the passage its
    question quotes; retrieved at test time, top-1 holds it for about a third of the
    questions (`DocumentInputs.retrieval_hit_rate`). A student trained on hits alone copies
    from the quote: asked about a passage that begins "We follow the conventions set out by
    (Vaswani et al., 2017; Brown" over a context that cites nothing, it answered Vaswani
    2017. The context keeps its answer; only the question changes (to one that differs: the
    variants of a window share its question).

    Raises:
        UserError: `share` outside 0-1, or a share to re-ask among fewer than two questions.
    """
    if not 0 <= share <= 1:
        raise UserError(f"share must be between 0 and 1, got {share}")
    asked = [dict(i) for i in inputs]
    chosen = random.Random(seed).sample(range(len(asked)), round(share * len(asked)))
    if chosen and len({i["query_str"] for i in inputs}) < 2:
        raise UserError("asked_elsewhere needs inputs with at least two different questions")
    rng = random.Random(seed + 1)
    for i in chosen:
        question = inputs[i]["query_str"]
        while (other := rng.choice(inputs)["query_str"]) == question:
            pass
        asked[i]["query_str"] = other
    return asked


def cut_short(
    inputs: Sequence[dict[str, str]],
    *,
    count: int,
    words: tuple[int, int] = (20, 60),
    seed: int = 0,
) -> list[dict[str, str]]:
    """`count` new inputs, each one of `inputs` (drawn with `seed`) with its context's text
    cut to its first `words[0]`-`words[1]` words, question and metadata lines unchanged.

    A splitter's last chunk of a document is short (one of lora's top-1 contexts is 34
    words, retrieved for 4 of 16 test questions), but training windows of a fixed size never
    are: a student that never saw a short context answered it from its question's quote.
    The text is cut where the words run out, even inside a citation, as a chunk ends; the
    teacher answers the cut context, so a citation cut in half is not one.

    Raises:
        UserError: a negative count, bounds that are not 1 <= low <= high, or no inputs.
    """
    low, high = words
    if count < 0 or not 1 <= low <= high:
        raise UserError(
            f"cut_short needs count >= 0 and 1 <= low <= high words, got {count}, {words}"
        )
    if count and not inputs:
        raise UserError("cut_short needs inputs to cut")
    rng = random.Random(seed)
    cut = []
    for _ in range(count):
        chosen = rng.choice(inputs)
        header, text = _metadata_and_text(chosen["context_str"])
        ends = [word.end() for word in re.finditer(r"\S+", text)]
        kept = text[: ends[min(rng.randint(low, high), len(ends)) - 1]] if ends else ""
        cut.append(dict(chosen, context_str=header + kept))  # its line breaks kept
    return cut


def _metadata_and_text(context: str) -> tuple[str, str]:
    """A context as LlamaIndex's LLM metadata mode writes a chunk: "key: value" lines
    (snake_case keys, so a caption such as "Table 1: ..." is never taken for one), a blank
    line, then the text (`context_str`); split into the lines with their blank line, and
    the text. A context without metadata lines is all text."""
    head, blank, text = context.partition("\n\n")
    if blank and all(re.match(r"[a-z_]+: ", line) for line in head.splitlines()):
        return head + blank, text
    return "", context


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


def held_out_stretches(length: int, *, stretches: int = 10, every: int = 5) -> list[Span]:
    """Cut `length` characters into `stretches` equal stretches and hold out every
    `every`-th, from stretch number `2 % every` (the third with the defaults: stretches 2
    and 7 of 0-9, spread over the document rather than its references at the end)."""
    if not 0 < every <= stretches:
        raise UserError(f"every must be between 1 and stretches ({stretches}), got {every}")
    bounds = [length * i // stretches for i in range(stretches + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(2 % every, stretches, every)]


def split_by_region(
    train: Sequence[DocumentInputs], test: DocumentInputs, *, held_out: Sequence[Span]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Training inputs (from any chunkings of one PDF) whose context touches no held-out
    stretch, and test inputs (from another chunking of it) whose context lies within one.

    Raises:
        UserError: the inputs come from documents of different lengths (not the same PDF),
            or nothing is left on one side.
    """
    for found in train:
        if found.length != test.length:
            raise UserError(
                "split_by_region needs chunkings of one document: got texts of "
                f"{found.length} and {test.length} characters"
            )

    def touches(span: Span) -> bool:
        return any(span[0] < end and start < span[1] for start, end in held_out)

    def inside(span: Span) -> bool:
        return any(start <= span[0] and span[1] <= end for start, end in held_out)

    kept = [
        i for f in train for i, span in zip(f.inputs, f.spans, strict=True) if not touches(span)
    ]
    tested = [i for i, span in zip(test.inputs, test.spans, strict=True) if inside(span)]
    if not kept or not tested:
        raise UserError(
            f"the split leaves {len(kept)} training and {len(tested)} test inputs; hold out "
            "more of the document or use smaller chunks"
        )
    return kept, tested
