"""JSONL in the OpenAI chat fine-tuning format, both ways, without loss.

Each line is `{"messages": [...]}`: the prompt messages followed by the teacher's raw
answer as the assistant turn, which is what OpenAI's fine-tuning API, LlamaIndex's
fine-tuning handlers and most SFT tools read. structune adds one key, `"structune"`, with
the rest of the row (id, task, inputs, parsed answer, validity, teacher, timings, schema)
so that export → import gives back the same store, rows the teacher failed on included
(flagged `failed`, with an empty answer: export with `valid_only` for training files).
Lines without it (files from other tools) are imported under a task and teacher given by
the caller.

Exports are written to a temporary file and renamed into place: a crash leaves either the
old file or the complete new one. Imports check every line before storing any.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from structune.errors import InvalidOutput, UserError
from structune.fileio import write_atomically
from structune.messages import Message
from structune.program import Program, extract_json_object
from structune.record.store import DatasetStore, Example

_METADATA_KEY = "structune"


@dataclass(frozen=True)
class ImportSummary:
    """What one `import_jsonl` did.

    Attributes:
        lines: examples read from the file.
        added: new rows stored.
        skipped: lines already stored (same task, inputs and teacher).
        invalid: of the lines read, answers that are not valid (e.g. against `program`).
        revalidated: rows already stored whose verdict changed, checked again (against
            the program given this time).
        first_error: why the first invalid answer is invalid.
    """

    lines: int
    added: int
    skipped: int
    invalid: int = 0
    revalidated: int = 0
    first_error: str | None = None


def export_jsonl(
    store: DatasetStore, path: str | Path, *, task: str | None = None, valid_only: bool = False
) -> int:
    """Write the store's examples (optionally one task, optionally only valid ones) to `path`;
    return how many lines were written."""
    if task is not None:
        store.require_task(task)
    examples = store.examples(task, valid=True if valid_only else None)
    schemas = {e.schema_hash: store.schema(e.schema_hash) for e in examples}
    lines = [_to_line(e, schemas[e.schema_hash]) for e in examples]
    write_atomically(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return len(lines)


def import_jsonl(
    path: str | Path,
    store: DatasetStore,
    *,
    program: Program[Any] | None = None,
    task: str | None = None,
    teacher: str | None = None,
) -> ImportSummary:
    """Import a JSONL file into `store`; all of it or, on any bad line, none of it.

    Lines written by `export_jsonl` carry their own metadata. Plain `{"messages": ...}`
    lines are stored under `task` (or the program's name) and `teacher` (default: the file
    name); with a `program`, their answers are validated against its schema, otherwise an
    answer counts as valid when it holds a JSON object.

    Raises:
        UserError: a line is malformed; the message gives the file and line number.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the JSONL file to import")
    if not path.is_file():
        raise UserError(f"{path} not found")
    examples: list[Example] = []
    schemas: dict[str, tuple[str, dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                example, schema = _from_line(data, program, task, teacher or f"import:{path.name}")
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(
                    f"{path}:{number}: {_describe(exc)}; nothing from this file was imported"
                ) from None
            examples.append(example)
            if schema is not None:
                schemas[example.schema_hash] = (example.task, schema)
    if not examples:
        raise UserError(f"{path} holds no examples (every line is blank); nothing to import")
    for schema_hash, (task_name, schema) in schemas.items():
        store.put_schema(task_name, schema_hash, schema)
    added = store.add_many(examples)
    revalidated = store.revalidate(examples) if program is not None else 0
    invalid = [e for e in examples if not e.valid]
    return ImportSummary(
        lines=len(examples),
        added=added,
        skipped=len(examples) - added,
        invalid=len(invalid),
        revalidated=revalidated,
        first_error=invalid[0].error if invalid else None,
    )


def _to_line(e: Example, schema: dict[str, Any] | None) -> dict[str, Any]:
    metadata = {k: v for k, v in asdict(e).items() if k not in ("messages", "completion")}
    metadata["schema"] = schema
    return {
        "messages": [*e.messages, {"role": "assistant", "content": e.completion}],
        _METADATA_KEY: metadata,
    }


def _from_line(
    data: Any, program: Program[Any] | None, task: str | None, teacher: str
) -> tuple[Example, dict[str, Any] | None]:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ValueError('expected an object with a "messages" list')
    messages = data["messages"]
    for message in messages:
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise ValueError('each message needs a string "role" and "content"')
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's answer")
    prompt: list[Message] = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    completion = messages[-1]["content"]

    metadata = data.get(_METADATA_KEY)
    if metadata is not None:
        schema = metadata.pop("schema", None)
        return Example(messages=prompt, completion=completion, **metadata), schema

    task_name = task or (program.name if program else None)
    if task_name is None:
        raise ValueError("this line has no structune metadata: give a task name (--task)")
    parsed, error = _check_answer(completion, program)
    # A plain line has no input variables: its prompt is its identity. Not `content_hash`:
    # this digest is stored in the example's inputs, taken over the prompt as written (keys
    # unsorted), and importing the file again must give the same ids.
    inputs = {"prompt_sha256": hashlib.sha256(json.dumps(prompt).encode()).hexdigest()}
    example = Example(
        task=task_name,
        schema_hash=program.schema_hash if program else "",
        inputs=inputs,
        messages=prompt,
        completion=completion,
        parsed=parsed,
        valid=parsed is not None,
        error=error,
        teacher=teacher,
    )
    return example, program.json_schema if program else None


def _check_answer(
    completion: str, program: Program[Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        if program is not None:
            return program.parse(completion).model_dump(mode="json"), None
        return extract_json_object(completion), None
    except InvalidOutput as exc:
        return None, exc.reason


def _describe(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, TypeError):
        return f"unexpected or missing structune metadata field ({exc})"
    return str(exc)
