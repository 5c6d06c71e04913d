"""Where training conversations come from: the dataset store or a JSONL file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structune.errors import UserError
from structune.messages import Message
from structune.program import Program
from structune.record.jsonl import import_jsonl
from structune.record.store import DatasetStore


def conversations_from_store(store: DatasetStore, task: str) -> list[list[Message]]:
    """The valid examples of `task`, as training conversations."""
    examples = store.examples(task, valid=True)
    if not examples:
        known = ", ".join(t.task for t in store.summary()) or "none"
        raise UserError(
            f"no valid examples for task {task!r} in {store.path} (tasks there: {known}); "
            "record or import some first"
        )
    return [e.training_conversation() for e in examples]


def conversations_from_jsonl(
    path: str | Path, program: Program[Any] | None = None
) -> list[list[Message]]:
    """The valid examples of a JSONL file, read through an in-memory store so that the
    file is checked exactly as `structune import` checks it: with a `program`, an answer
    is valid when it validates against the program's schema."""
    with DatasetStore(":memory:") as store:
        import_jsonl(path, store, program=program, task=Path(path).stem)
        return [e.training_conversation() for e in store.examples(valid=True)]
