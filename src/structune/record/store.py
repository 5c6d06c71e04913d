"""The dataset store: recorded examples in one SQLite file.

One row per example. An example's id is a content hash of (task, inputs, teacher), so
recording the same input with the same teacher twice is a no-op: re-running a recording
skips what is done, and since answers are committed batch by batch, a crash loses at
most the batch in flight. A row can also record that the teacher failed on an input
(`Example.failed`): such a row holds the cause, is never trained on, and is the one kind
of row a later write replaces. WAL mode, a busy timeout and short write transactions
taken up front let several processes record into one file at once. The schema version
lives in `PRAGMA user_version`; `_MIGRATIONS` only ever grows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from structune.errors import UserError
from structune.fileio import check_writable
from structune.hashing import content_hash
from structune.messages import Message
from structune.paths import default_db_path
from structune.program import canonical_json

_MIGRATIONS = [
    """
    CREATE TABLE examples (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        schema_hash TEXT NOT NULL,
        inputs TEXT NOT NULL,
        messages TEXT NOT NULL,
        completion TEXT NOT NULL,
        parsed TEXT,
        valid INTEGER NOT NULL,
        error TEXT,
        teacher TEXT NOT NULL,
        latency_s REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        created TEXT NOT NULL
    );
    CREATE INDEX examples_task ON examples (task, valid);
    CREATE TABLE schemas (
        hash TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        schema TEXT NOT NULL
    );
    """,
    "ALTER TABLE examples ADD COLUMN failed INTEGER NOT NULL DEFAULT 0",
]


def example_id(task: str, inputs: Mapping[str, Any], teacher: str) -> str:
    """The identity of an example: the same task, inputs and teacher give the same id."""
    return content_hash([task, inputs, teacher], length=24)


@dataclass(frozen=True)
class Example:
    """One recorded teacher answer.

    Attributes:
        messages: the prompt messages the teacher saw (without its answer).
        completion: the teacher's raw text.
        parsed: the validated answer as JSON data, or None when it was invalid.
        valid: whether `completion` validated against the schema; invalid examples are
            kept for inspection but never trained on.
        failed: the teacher gave no answer (it failed after its own retries; `error` says
            why). Unlike an invalid answer, a failure is not final: the next recording
            asks again and replaces the row.
    """

    task: str
    schema_hash: str
    inputs: dict[str, Any]
    messages: list[Message]
    completion: str
    parsed: dict[str, Any] | None
    valid: bool
    teacher: str
    error: str | None = None
    failed: bool = False
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", example_id(self.task, self.inputs, self.teacher))

    def training_conversation(self) -> list[Message]:
        """The prompt plus the answer to learn: the parsed answer in canonical JSON, so the
        student learns clean JSON even where the teacher wrapped it in prose or fences."""
        answer = canonical_json(self.parsed) if self.parsed is not None else self.completion
        return [*self.messages, {"role": "assistant", "content": answer}]


@dataclass(frozen=True)
class TaskSummary:
    task: str
    examples: int  # answers, valid or not; teacher failures are counted apart
    valid: int
    teachers: list[str]
    failed: int = 0


class DatasetStore:
    """Recorded examples in a SQLite file (created on first use).

    Args:
        path: the database file; defaults to `STRUCTUNE_DB` or `<home>/datasets.sqlite`.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        if not self.path.is_file():
            check_writable(self.path)  # a folder, or a folder that is a file: say so
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            raise  # a busy or unreadable file, not a file of the wrong kind
        except sqlite3.DatabaseError as exc:
            raise UserError(
                f"{self.path} is not a structune dataset (SQLite said: {exc})"
            ) from None
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.row_factory = sqlite3.Row
        self._migrate()

    def __enter__(self) -> DatasetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken up front so concurrent writers queue instead of failing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    def put_schema(self, task: str, schema_hash: str, schema: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO schemas (hash, task, schema) VALUES (?, ?, ?)",
                (schema_hash, task, json.dumps(schema, ensure_ascii=False)),
            )

    def schema(self, schema_hash: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT schema FROM schemas WHERE hash = ?", (schema_hash,)
        ).fetchone()
        return json.loads(row["schema"]) if row else None

    def add_many(self, examples: Iterable[Example]) -> int:
        """Store examples in one transaction; return how many rows were added or replaced.

        An id already stored keeps its row, unless that row is a failure: then the new row
        (an answer, or a newer failure) replaces it. So of two processes that record the
        same input at once, the first answer wins and a failure never hides an answer.
        """
        rows = [_to_row(e) for e in examples]  # outside the transaction, to keep it short
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(_UPSERT, rows)
            return db.total_changes - before

    def answered_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` that the teacher answered (validly or not): finished work."""
        return self._ids_where(ids, failed=False)

    def failed_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` stored as teacher failures: work to ask again."""
        return self._ids_where(ids, failed=True)

    def _ids_where(self, ids: Iterable[str], *, failed: bool) -> set[str]:
        ids = list(ids)
        found: set[str] = set()
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            rows = self._db.execute(
                f"SELECT id FROM examples WHERE failed = ? "
                f"AND id IN ({', '.join('?' for _ in chunk)})",
                [int(failed), *chunk],
            )
            found.update(row["id"] for row in rows)
        return found

    def examples(self, task: str | None = None, *, valid: bool | None = None) -> list[Example]:
        """Examples in insertion order, optionally only one task or one validity."""
        where: list[str] = []
        params: list[Any] = []
        if task is not None:
            where.append("task = ?")
            params.append(task)
        if valid is not None:
            where.append("valid = ?")
            params.append(int(valid))
        sql = "SELECT * FROM examples" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [_from_row(row) for row in self._db.execute(sql + " ORDER BY rowid", params)]

    def tasks(self) -> list[str]:
        """The names of the tasks that have rows, sorted."""
        rows = self._db.execute("SELECT DISTINCT task FROM examples ORDER BY task")
        return [row["task"] for row in rows]

    def require_task(self, task: str) -> None:
        """Raises UserError, naming the tasks there are, when `task` has no rows."""
        if task not in self.tasks():
            known = ", ".join(self.tasks()) or "none yet"
            raise UserError(
                f"no task {task!r} in {self.path} (tasks there: {known}); list them with "
                "`structune datasets`"
            )

    def delete_task(self, task: str) -> int:
        """Remove every row of `task` (and its schemas); return how many examples went."""
        self.require_task(task)
        with self.transaction() as db:
            removed = db.execute("DELETE FROM examples WHERE task = ?", (task,)).rowcount
            db.execute("DELETE FROM schemas WHERE task = ?", (task,))
        return int(removed)

    def revalidate(self, examples: Iterable[Example]) -> int:
        """Give stored rows the verdict of `examples` with the same id and answer text: the
        validity, parsed answer, error and schema of a check made again (for instance
        against the right program). Return how many rows changed."""
        rows = [
            {"id": e.id, "completion": e.completion, "hash": e.schema_hash,
             "parsed": _dumps(e.parsed), "valid": int(e.valid), "error": e.error}
            for e in examples
        ]  # fmt: skip
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(_REVALIDATE, rows)
            return db.total_changes - before

    def summary(self) -> list[TaskSummary]:
        rows = self._db.execute(
            "SELECT task, SUM(NOT failed) AS n, SUM(valid) AS v, SUM(failed) AS f, "
            "json_group_array(DISTINCT teacher) AS t FROM examples GROUP BY task ORDER BY task"
        )
        return [
            TaskSummary(r["task"], r["n"], r["v"], sorted(json.loads(r["t"])), r["f"]) for r in rows
        ]


_COLUMNS = [
    "id", "task", "schema_hash", "inputs", "messages", "completion", "parsed", "valid", "error",
    "failed", "teacher", "latency_s", "prompt_tokens", "completion_tokens", "created",
]  # fmt: skip

_UPSERT = (
    f"INSERT INTO examples ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS[1:])} "
    "WHERE examples.failed"
)


_REVALIDATE = (
    "UPDATE examples SET schema_hash = :hash, parsed = :parsed, valid = :valid, error = :error "
    "WHERE id = :id AND completion = :completion AND NOT failed AND NOT (schema_hash IS :hash "
    "AND parsed IS :parsed AND valid IS :valid AND error IS :error)"
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _to_row(e: Example) -> tuple[Any, ...]:
    return (
        e.id, e.task, e.schema_hash, _dumps(e.inputs), _dumps(e.messages), e.completion,
        _dumps(e.parsed), int(e.valid), e.error, int(e.failed), e.teacher, e.latency_s,
        e.prompt_tokens, e.completion_tokens, e.created,
    )  # fmt: skip


def _from_row(row: sqlite3.Row) -> Example:
    return Example(
        id=row["id"],
        task=row["task"],
        schema_hash=row["schema_hash"],
        inputs=json.loads(row["inputs"]),
        messages=json.loads(row["messages"]),
        completion=row["completion"],
        parsed=json.loads(row["parsed"]) if row["parsed"] is not None else None,
        valid=bool(row["valid"]),
        error=row["error"],
        failed=bool(row["failed"]),
        teacher=row["teacher"],
        latency_s=row["latency_s"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        created=row["created"],
    )
