"""Recording: run a program over many inputs with a teacher and store every answer.

Inputs already answered for this (task, teacher) are skipped before any teacher call, so
a re-run costs nothing for finished work. Answers are committed batch by batch: a crash
loses at most the batch in flight. Invalid answers are stored too, flagged with their
error, never trained on, and final.

A teacher that fails on an input (any exception once the client's own retries are spent,
from an HTTP error to a bug in a callable teacher) does not stop the run: the input is
stored as a failed row with the cause and asked again on the next run, after the new
inputs, so an input the teacher cannot answer never blocks the others. The run stops
early only when the teacher has failed on every input it tried and some of those were
new: then it is taken as down or misconfigured (a bad key, an unknown model), and the run
stops after the first batch rather than spend retries on every remaining input. Inputs
that failed before and fail again are reported, not fatal: everything else is done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from structune.errors import BackendError, InvalidOutput, StructuneError, UserError
from structune.llms.base import LLM, JsonSchema, schemas_per_row
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message
from structune.program import Program
from structune.record.store import DatasetStore, Example, example_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordSummary:
    """What one `record` run did.

    Attributes:
        recorded: inputs the teacher answered in this run (`valid` + `invalid`).
        skipped: inputs answered before this run.
        valid: answers that are valid instances of the schema.
        invalid: answers that are not; stored flagged, never trained on, not asked again.
        failed: inputs the teacher failed on; stored with the cause, asked again next run.
        first_failure: the cause of the first failure, if any.
    """

    recorded: int
    skipped: int
    valid: int
    invalid: int
    failed: int = 0
    first_failure: str | None = None


def record(
    program: Program[Any],
    teacher: LLM,
    inputs: Iterable[Mapping[str, Any]],
    *,
    store: DatasetStore,
    batch_size: int = 8,
    max_tokens: int = 1024,
    sampling: Sampling = GREEDY,
    constrained: bool = False,
    progress: bool = True,
) -> RecordSummary:
    """Ask `teacher` to answer `program` for each input and record the answers in `store`.

    With `constrained`, the teacher is held to the program's schema (see `Program.run`);
    `sampling` is how it picks tokens (greedy by default).
    Answers whose extracted fields are not copied from their inputs are stored invalid.

    Raises:
        UserError: the teacher refused every input of the first batch, new ones among
            them, for a reason only the caller can fix, such as a rejected API key.
        BackendError: the teacher failed on every input of such a first batch otherwise
            (down, or answering errors). Either way those failures are stored first.
    """
    from tqdm.auto import tqdm

    unique: dict[str, dict[str, Any]] = {}
    for item in inputs:
        program.render(item)  # a missing variable fails here, before any paid teacher call
        program.sources(item)  # and so does an empty text that extracted fields copy from
        unique.setdefault(example_id(program.name, item, teacher.model_id), dict(item))
    pending, skipped, retries = _pending(store, unique)
    store.put_schema(program.name, program.schema_hash, program.json_schema)

    has_new = len(pending) > retries  # new inputs come first, so the first batch has some
    valid = invalid = failed = 0
    first_failure: str | None = None
    with tqdm(
        total=len(pending), desc=f"recording {program.name}", disable=None if progress else True
    ) as bar:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            outcomes = _ask(teacher, program, batch, max_tokens, sampling, constrained=constrained)
            examples = [
                _to_example(program, teacher.model_id, item, outcome)
                for item, outcome in zip(batch, outcomes, strict=True)
            ]
            store.add_many(examples)
            valid += sum(e.valid for e in examples)
            failed += sum(e.failed for e in examples)
            invalid += sum(not e.valid and not e.failed for e in examples)
            errors = [o for o in outcomes if isinstance(o, Exception)]
            first_failure = first_failure or (_first_line(errors[0]) if errors else None)
            if start == 0 and len(errors) == len(batch) and has_new:
                raise _teacher_down(errors)
            bar.update(len(batch))
    summary = RecordSummary(valid + invalid, skipped, valid, invalid, failed, first_failure)
    log.debug("recorded %s", summary)  # returned, and printed by the CLI
    return summary


def _pending(
    store: DatasetStore, unique: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], int, int]:
    """The inputs to ask the teacher about, new ones before earlier failures; how many
    are skipped as answered; how many of the pending are earlier failures."""
    answered = store.answered_ids(unique)
    failed_before = store.failed_ids(unique)
    seen = answered | failed_before
    new = [item for key, item in unique.items() if key not in seen]
    again = [item for key, item in unique.items() if key in failed_before]
    return new + again, len(answered), len(again)


def _ask(
    teacher: LLM,
    program: Program[Any],
    batch: list[dict[str, Any]],
    max_tokens: int,
    sampling: Sampling,
    *,
    constrained: bool,
) -> list[Completion | Exception]:
    """The teacher's answer to each input of `batch`, or the error it failed with."""
    conversations = [program.messages(item) for item in batch]
    schemas = _decoding_schemas(program, batch) if constrained else None
    if _batches(teacher):
        try:
            return list(
                teacher.complete_many(
                    conversations, max_tokens=max_tokens, sampling=sampling, json_schema=schemas
                )
            )
        except Exception as exc:  # the client's errors, or whatever a callable raises
            # One bad input fails the whole call; alone, it costs only its own answer.
            log.warning(
                "the teacher failed on a batch of %d (%s); asking one input at a time",
                len(batch),
                _first_line(exc),
            )
    return [
        _ask_one(teacher, messages, schema, max_tokens, sampling)
        for messages, schema in zip(
            conversations, schemas_per_row(schemas, len(batch)), strict=True
        )
    ]


def _batches(teacher: LLM) -> bool:
    """Whether the teacher answers a batch in one call. The default `complete_many` asks one
    conversation after another and drops the answers before a failure: asking each one
    here instead keeps them, and keeps every input within the client's retries."""
    return type(teacher).complete_many is not LLM.complete_many


def _ask_one(
    teacher: LLM,
    messages: Sequence[Message],
    schema: JsonSchema | None,
    max_tokens: int,
    sampling: Sampling,
) -> Completion | Exception:
    try:
        return teacher.complete(
            messages, max_tokens=max_tokens, sampling=sampling, json_schema=schema
        )
    except Exception as exc:  # the client's errors, or whatever a callable raises
        log.warning("the teacher failed on an input: %s", _first_line(exc))
        return exc


def _teacher_down(errors: list[Exception]) -> StructuneError:
    message = (
        f"the teacher failed on every input of the first batch ({len(errors)}), so recording "
        f"stopped: {_first_line(errors[0])} (the failures are stored and asked again when "
        "you re-run)"
    )
    if all(isinstance(e, UserError) for e in errors):
        return UserError(message)
    return BackendError(message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, StructuneError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__  # a bug's kind


def _decoding_schemas(
    program: Program[Any], batch: list[dict[str, Any]]
) -> Mapping[str, Any] | list[dict[str, Any]]:
    """The program's schema, or one per input when extracted fields copy from each input."""
    if not program.extracted:
        return program.json_schema
    return [program.decoding_schema(item) for item in batch]


def _to_example(
    program: Program[Any],
    teacher_id: str,
    inputs: dict[str, Any],
    outcome: Completion | Exception,
) -> Example:
    if isinstance(outcome, Exception):
        return _failure(program, teacher_id, inputs, outcome)
    parsed: dict[str, Any] | None = None
    error = None
    if outcome.closed_early:
        # It parses, but a grammar ended it as the budget ran out: not the teacher's answer.
        error = "closed early by the grammar at max_tokens; raise max_tokens"
    else:
        try:
            parsed = program.parse_completion(outcome, inputs).model_dump(mode="json")
        except InvalidOutput as exc:
            error = exc.reason
            if outcome.finish_reason == "length":
                error = f"truncated at max_tokens; {error}"
    return Example(
        task=program.name,
        schema_hash=program.schema_hash,
        inputs=inputs,
        messages=program.messages(inputs),
        completion=outcome.text,
        parsed=parsed,
        valid=parsed is not None,
        error=error,
        teacher=teacher_id,
        latency_s=round(outcome.latency_s, 4),
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
    )


def _failure(
    program: Program[Any], teacher_id: str, inputs: dict[str, Any], error: Exception
) -> Example:
    return Example(
        task=program.name,
        schema_hash=program.schema_hash,
        inputs=inputs,
        messages=program.messages(inputs),
        completion="",
        parsed=None,
        valid=False,
        failed=True,
        error=f"teacher error: {error if isinstance(error, StructuneError) else repr(error)}",
        teacher=teacher_id,
    )
