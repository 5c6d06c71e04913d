"""Questions over a document's chunks: the inputs of a RAG dataset.

Two sources, one output (a JSONL file of `{"question", "node_id"}` that reloads as it was):

- `generate_questions`: any LlamaIndex LLM writes N questions per chunk, with the seed
  notebook's own `DatasetGenerator` and citation-seeking prompt, one generator per chunk so
  each question keeps the chunk it came from; chunks run concurrently (`workers` at a time),
  which an API teacher turns into parallel requests.
- `heading_questions`: offline, from the document itself: one question per section heading
  ("Which citations are mentioned in the section about Related work?"), the notebook's own
  sample question shape. PDF text puts a section number on its own line and the title on
  the next; that is what is matched.
- `passage_questions`: offline, one question per chunk, quoting the chunk's opening words,
  so that every chunk is asked about once (a dataset as large as the document allows) and
  retrieval has words to find it by.
"""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from structune.errors import UserError
from structune.fileio import write_atomically

# The seed notebook's question prompt, word for word.
QUESTION_GEN_QUERY = """\
Snippets from a research paper is given below. It contains citations.
Please generate questions from the text asking about these citations.
For instance, here are some sample questions:
Which citations correspond to related works on transformer models?
Tell me about authors that worked on advancing RLHF.
Can you tell me citations corresponding to all computer vision works? \
"""
QUESTION_GEN_TEMPLATE = """\
{query_str}

Context:
{context_str}

Questions:
"""
HEADING_QUESTION = "Which citations are mentioned in the section about {heading}?"
PASSAGE_QUESTION = 'Which citations are mentioned in the passage that begins "{opening}"?'
PASSAGE_OPENING_WORDS = 12

# "3.1\nHigh-level methodology": a section number (no leading zero, so no "0.75" from a
# plot axis) alone on its line, then a capitalised title of a few words.
_HEADING = re.compile(
    r"^(?:[1-9]\d?(?:\.[1-9]\d?){0,2}|[A-H](?:\.[1-9]\d?){0,2})\.?\n"
    r"(?P<title>[A-Z][A-Za-z][A-Za-z ,:'\u2019?&-]{2,70})$",
    re.MULTILINE,
)
_NOT_HEADINGS = re.compile(r"^(?:Table|Figure|Fig|Algorithm|Equation)\b")


@dataclass(frozen=True)
class Question:
    """A question and the chunk (node id) it was written from."""

    question: str
    node_id: str


def heading_questions(nodes: Sequence[Any]) -> list[Question]:
    """One question per distinct section heading, tied to the chunk where the heading is."""
    questions: list[Question] = []
    seen: set[str] = set()
    for node in nodes:
        for match in _HEADING.finditer(node.get_content()):
            title = " ".join(match["title"].split())
            if _NOT_HEADINGS.match(title) or title.casefold() in seen:
                continue
            seen.add(title.casefold())
            questions.append(Question(HEADING_QUESTION.format(heading=title), node.node_id))
    if not questions:
        raise UserError(
            "no numbered section headings found in the document's chunks; generate questions "
            "with an LLM instead (`structune questions --llm ...`)"
        )
    return questions


def passage_questions(nodes: Sequence[Any]) -> list[Question]:
    """One question per chunk that has text, quoting its first `PASSAGE_OPENING_WORDS` words."""
    questions = []
    for node in nodes:
        words = node.get_content().split()[:PASSAGE_OPENING_WORDS]
        if words:
            opening = " ".join(words).replace('"', "'")
            questions.append(Question(PASSAGE_QUESTION.format(opening=opening), node.node_id))
    if not questions:
        raise UserError("the index holds no chunk with text to ask about")
    return questions


def generate_questions(
    nodes: Sequence[Any],
    llm: Any,
    *,
    per_chunk: int = 1,
    workers: int = 4,
    progress: bool = True,
) -> list[Question]:
    """`per_chunk` questions for each chunk from `llm` (any LlamaIndex LLM), in chunk order."""
    if per_chunk < 1 or workers < 1:
        raise UserError("per_chunk and workers must be at least 1")
    with warnings.catch_warnings():
        # DatasetGenerator is deprecated upstream, its successor is not in llama-index-core
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.run(_generate(nodes, llm, per_chunk, workers, progress))


async def _generate(
    nodes: Sequence[Any], llm: Any, per_chunk: int, workers: int, progress: bool
) -> list[Question]:
    from llama_index.core import PromptTemplate
    from llama_index.core.evaluation import DatasetGenerator
    from llama_index.core.schema import MetadataMode
    from tqdm.asyncio import tqdm_asyncio

    limit = asyncio.Semaphore(workers)

    async def for_node(node: Any) -> list[Question]:
        generator = DatasetGenerator(
            [node],
            llm=llm,
            question_gen_query=QUESTION_GEN_QUERY,
            text_question_template=PromptTemplate(QUESTION_GEN_TEMPLATE),
            metadata_mode=MetadataMode.ALL,
            num_questions_per_chunk=per_chunk,
        )
        async with limit:
            texts = await generator.agenerate_questions_from_nodes(num=per_chunk)
        return [Question(t.strip(), node.node_id) for t in texts if t.strip()]

    tasks = [for_node(node) for node in nodes]
    per_node = await tqdm_asyncio.gather(
        *tasks, desc="questions", unit="chunk", disable=None if progress else True
    )
    return [q for questions in per_node for q in questions]


def save_questions(questions: Sequence[Question], path: str | Path) -> None:
    """Write questions as JSONL (atomically)."""
    text = "".join(json.dumps(asdict(q), ensure_ascii=False) + "\n" for q in questions)
    write_atomically(path, text)


def load_questions(path: str | Path) -> list[Question]:
    """Read questions saved by `save_questions`.

    Raises:
        UserError: the file is missing or a line is not a question; the line is named.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"questions file {path} not found; write it with `structune questions`")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            questions.append(Question(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}:{number}: not a question line ({exc})") from None
        if not questions[-1].question.strip():
            raise UserError(f"{path}:{number}: the question is empty")
    return questions
