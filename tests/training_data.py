"""Training conversations for the tests: the curated album answers, one per movie."""

from __future__ import annotations

from structune.tasks.albums import curated_conversations


def conversations(n: int = 6) -> list[list[dict[str, str]]]:
    """The first `n` curated albums as training conversations (prompt, then the answer)."""
    return curated_conversations(n)
