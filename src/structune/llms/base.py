"""The one small interface every model backend implements.

A backend turns chat messages into a `Completion`. `complete_many` exists so that local
backends can decode many conversations as one batch; remote and callable backends keep the
default, which simply calls `complete` in turn.

`sampling` says how each token is picked (`structune.llms.sampling`); greedy by default.
`json_schema`, when given, asks the backend to hold its answer to that schema: local
models decode under a grammar, OpenAI-compatible servers get it as `response_format`.
A backend that cannot enforce a schema refuses it rather than ignoring it. `complete_many`
also takes one schema per conversation: a schema with extracted fields carries its row's
source text (`structune.constrain.bind_sources`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from structune.constrain.extractive import Extraction, with_extraction
from structune.errors import UserError
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message

JsonSchema = Mapping[str, Any]
SchemaPerRow = JsonSchema | Sequence[JsonSchema] | None
"""One schema for every conversation, a list with one per conversation, or none."""


def schemas_per_row(json_schema: SchemaPerRow, rows: int) -> list[JsonSchema | None]:
    """`json_schema` as a list with one entry per conversation.

    Raises:
        UserError: a list of schemas whose length is not the number of conversations.
    """
    if json_schema is None or isinstance(json_schema, Mapping):
        return [json_schema] * rows
    if len(json_schema) != rows:
        raise UserError(
            f"got {len(json_schema)} schemas for {rows} conversations; pass one schema for "
            "all, or exactly one per conversation"
        )
    return list(json_schema)


class LLM(ABC):
    """A chat model: messages in, a `Completion` out.

    Attributes:
        model_id: a stable name for this model, recorded with every example it produces.
        context_window: prompt plus answer tokens the model can attend to, where known.
    """

    model_id: str
    context_window: int | None = None

    @abstractmethod
    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Answer one conversation, held to `json_schema` when one is given."""

    def complete_many(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: SchemaPerRow = None,
    ) -> list[Completion]:
        """Answer many conversations, in order. Local backends override this to batch.

        `json_schema` is one schema for all conversations or a list with one per conversation.
        """
        schemas = schemas_per_row(json_schema, len(conversations))
        return [
            self.complete(messages, max_tokens=max_tokens, sampling=sampling, json_schema=schema)
            for messages, schema in zip(conversations, schemas, strict=True)
        ]


class Constrained(LLM):
    """`llm` with every answer held to a schema: a row of its own in a comparison.

    With `json_schema`, every answer is held to that schema. Without, each answer is held
    to the schema the caller passes with it: `compare` passes the program's schema bound to
    each row's inputs, so extracted fields copy from that row (`Program.decoding_schema`).
    `extraction` chooses how marked fields are held: "marked" as the schema says,
    "unordered" as copies in any order, "off" by the JSON grammar alone. `relax` lets a
    schema with keywords no grammar enforces decode under a looser grammar, every answer
    still checked against the whole schema (`structune.constrain.checked.relaxed`).

    Example: `compare(program, {"base": base, "base + grammar": Constrained(base)}, ...)`.
    """

    def __init__(
        self,
        llm: LLM,
        json_schema: Mapping[str, Any] | None = None,
        *,
        extraction: Extraction = "marked",
        relax: bool = False,
    ):
        self.llm = llm
        self.json_schema = json_schema
        self.extraction = extraction
        self.relax = relax
        self.model_id = f"{llm.model_id}+grammar"
        self.context_window = llm.context_window

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        return self.complete_many(
            [messages], max_tokens=max_tokens, sampling=sampling, json_schema=json_schema
        )[0]

    def complete_many(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: SchemaPerRow = None,
    ) -> list[Completion]:
        """Answer under this wrapper's schema, else under the schemas passed.

        Raises:
            UserError: neither this wrapper nor the call gives a schema.
        """
        schemas = schemas_per_row(
            self.json_schema if self.json_schema is not None else json_schema,
            len(conversations),
        )
        if any(schema is None for schema in schemas):
            raise UserError(
                "Constrained(llm) without a schema holds each answer to the schema passed "
                "with it: use it in compare(), or give Constrained(llm, json_schema)"
            )
        from structune.constrain.checked import relaxed

        held = [with_extraction(s, self.extraction) for s in schemas if s is not None]
        return self.llm.complete_many(
            conversations,
            max_tokens=max_tokens,
            sampling=sampling,
            json_schema=[relaxed(s) for s in held] if self.relax else held,
        )
