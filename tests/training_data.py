"""Training conversations for the tests: the curated album answers, one per movie."""

from __future__ import annotations

from structune.program import canonical_json
from structune.tasks.albums import album_program, curated_albums


def conversations(n: int = 6) -> list[list[dict[str, str]]]:
    """The first `n` curated albums as training conversations (prompt, then the answer)."""
    return [
        [
            *album_program.messages({"movie_name": a["movie_name"]}),
            {"role": "assistant", "content": canonical_json(a["album"])},
        ]
        for a in curated_albums()[:n]
    ]
