"""Structured answers over a document: question → top-k chunks → a program over them.

The program's template takes `{context_str}` (the retrieved chunks, as LlamaIndex's query
engine writes them) and `{query_str}`; `citation_program` is the notebook's. The same
inputs serve three uses: `ask` answers one question with its source chunks (the
notebook's `response.source_nodes`); `retrieved_inputs` turns saved questions into program
inputs for `structune record` (so the teacher's recorded prompt holds the retrieved context,
and the student learns context → structure) and for comparisons.

The notebook's own path, `index.as_query_engine(output_cls=Response, llm=StructuneLLM(...))`,
works as well; this one batches questions through a local model and reports truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from structune.errors import InvalidOutput
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.program import Program
from structune.rag.ingest import retrieve
from structune.rag.questions import Question


@dataclass(frozen=True)
class RagAnswer:
    """A structured answer and where it came from.

    Attributes:
        answer: the validated output object, or None when the model's text is not one.
        text: the model's raw answer.
        error: why the text is not a valid answer, when it is not.
        truncated: `max_tokens` cut the answer off.
        inputs: the program's inputs (the question and the retrieved context).
        sources: the retrieved chunks, best first (LlamaIndex `NodeWithScore`s).
    """

    answer: Any
    text: str
    error: str | None
    truncated: bool
    inputs: dict[str, str]
    sources: list[Any]


def context_str(sources: Sequence[Any]) -> str:
    """The retrieved chunks as LlamaIndex's query engine puts them into its prompt."""
    from llama_index.core.schema import MetadataMode

    return "\n\n".join(s.node.get_content(metadata_mode=MetadataMode.LLM) for s in sources)


def retrieved_inputs(
    index: Any, questions: Sequence[Question | str], *, top_k: int = 1
) -> list[dict[str, str]]:
    """Program inputs `{"query_str", "context_str"}` for each question, in order."""
    texts = [q.question if isinstance(q, Question) else q for q in questions]
    return [inputs for inputs, _ in _retrieve_all(index, texts, top_k)]


def _retrieve_all(
    index: Any, questions: Sequence[str], top_k: int
) -> list[tuple[dict[str, str], list[Any]]]:
    found = []
    for question in questions:
        sources = retrieve(index, question, top_k=top_k)
        found.append(({"query_str": question, "context_str": context_str(sources)}, sources))
    return found


def ask(
    index: Any,
    questions: Sequence[str],
    llm: LLM,
    program: Program[Any],
    *,
    top_k: int = 1,
    constrained: bool = False,
    max_tokens: int = 1024,
    sampling: Sampling = GREEDY,
) -> list[RagAnswer]:
    """Answer each question from its top-k chunks, all questions as one batch of `llm`.

    Extracted fields (`structune.constrain.extractive`) copy from each question's own
    chunks: under `constrained` while decoding, and in every case when the answer is parsed.
    """
    retrieved = _retrieve_all(index, questions, top_k)
    inputs = [given for given, _ in retrieved]
    completions = llm.complete_many(
        [program.messages(i) for i in inputs],
        max_tokens=max_tokens,
        sampling=sampling,
        json_schema=[program.decoding_schema(i) for i in inputs] if constrained else None,
    )
    answers = []
    for completion, (given, found) in zip(completions, retrieved, strict=True):
        try:
            parsed, error = program.parse_completion(completion, given), None
        except InvalidOutput as exc:
            parsed, error = None, exc.reason
        truncated = completion.finish_reason == "length"
        answers.append(RagAnswer(parsed, completion.text, error, truncated, given, found))
    return answers
