"""Recording: teacher answers into a SQLite dataset, and JSONL in and out."""

from structune.record.jsonl import export_jsonl, import_jsonl
from structune.record.recorder import RecordSummary, record
from structune.record.store import DatasetStore, Example

__all__ = ["DatasetStore", "Example", "RecordSummary", "export_jsonl", "import_jsonl", "record"]
