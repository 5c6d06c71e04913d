"""Recording: run a program over many inputs with a teacher and store every answer.

Inputs already recorded for this (task, teacher) are skipped before any teacher call, so
a re-run costs nothing for finished work. Answers are committed batch by batch: a crash
or a teacher that goes down mid-run loses at most the batch in flight. Invalid answers
are stored too, flagged with their error, and never trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from structune.errors import InvalidOutput
from structune.llms.base import LLM, Completion
from structune.program import Program
from structune.record.store import DatasetStore, Example, example_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordSummary:
    recorded: int
    skipped: int
    valid: int
    invalid: int


def record(
    program: Program[Any],
    teacher: LLM,
    inputs: Iterable[Mapping[str, Any]],
    *,
    store: DatasetStore,
    batch_size: int = 8,
    max_tokens: int = 1024,
    constrained: bool = False,
    progress: bool = True,
) -> RecordSummary:
    """Ask `teacher` to answer `program` for each input and record the answers in `store`.

    With `constrained`, the teacher is held to the program's schema (see `Program.run`).
    Answers whose extracted fields are not copied from their inputs are stored invalid.
    """
    from tqdm.auto import tqdm

    unique: dict[str, dict[str, Any]] = {}
    for item in inputs:
        program.render(item)  # a missing variable fails here, before any paid teacher call
        program.sources(item)  # and so does an empty text that extracted fields copy from
        unique.setdefault(example_id(program.name, item, teacher.model_id), dict(item))
    done = store.existing_ids(unique)
    pending = [(key, item) for key, item in unique.items() if key not in done]
    store.put_schema(program.name, program.schema_hash, program.json_schema)

    valid = invalid = 0
    with tqdm(
        total=len(pending), desc=f"recording {program.name}", disable=None if progress else True
    ) as bar:
        for start in range(0, len(pending), batch_size):
            batch = [item for _, item in pending[start : start + batch_size]]
            completions = teacher.complete_many(
                [program.messages(item) for item in batch],
                max_tokens=max_tokens,
                json_schema=_decoding_schemas(program, batch) if constrained else None,
            )
            examples = [
                _to_example(program, teacher.model_id, item, completion)
                for item, completion in zip(batch, completions, strict=True)
            ]
            store.add_many(examples)
            valid += sum(e.valid for e in examples)
            invalid += sum(not e.valid for e in examples)
            bar.update(len(batch))
    summary = RecordSummary(len(pending), len(done), valid, invalid)
    log.info("recorded %s", summary)
    return summary


def _decoding_schemas(
    program: Program[Any], batch: list[dict[str, Any]]
) -> Mapping[str, Any] | list[dict[str, Any]]:
    """The program's schema, or one per input when extracted fields copy from each input."""
    if not program.extracted:
        return program.json_schema
    return [program.decoding_schema(item) for item in batch]


def _to_example(
    program: Program[Any], teacher_id: str, inputs: dict[str, Any], completion: Completion
) -> Example:
    parsed: dict[str, Any] | None = None
    error = None
    try:
        parsed = program.parse(completion.text, inputs).model_dump(mode="json")
    except InvalidOutput as exc:
        error = exc.reason
        if completion.finish_reason == "length":
            error = f"truncated at max_tokens; {error}"
    return Example(
        task=program.name,
        schema_hash=program.schema_hash,
        inputs=inputs,
        messages=program.messages(inputs),
        completion=completion.text,
        parsed=parsed,
        valid=parsed is not None,
        error=error,
        teacher=teacher_id,
        latency_s=round(completion.latency_s, 4),
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
