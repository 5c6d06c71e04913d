"""The notebook's album task: a movie in, an `Album` out.

The curated answers in `data/albums.jsonl` stand in for the notebook's GPT-4 teacher
where no API is configured: 120 hand-written albums for distinct movies, in the format
GPT-4 answered. `data/heldout_movies.txt` holds 50 other movies that no curated answer
uses, for comparisons on inputs never seen in training (Goodfellas, the notebook's own
test input, first).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib.resources import files
from typing import Annotated, Any

import pydantic

from structune.constrain.distinct import Distinct
from structune.errors import UserError
from structune.llms.callable import CallableLLM
from structune.messages import Message
from structune.program import Program, canonical_json
from structune.train.config import TrainConfig


class Song(pydantic.BaseModel):
    """Data model for a song."""

    title: str
    length_seconds: int


class Album(pydantic.BaseModel):
    """Data model for an album."""

    name: str
    artist: str
    songs: list[Song]


class DistinctTitlesAlbum(Album):
    """The album with its song titles held distinct while decoding: the schema to hold an
    album answer to (`Constrained(llm, DISTINCT_TITLES_SCHEMA)`), not to prompt with, so
    the prompt and the recorded dataset keep the notebook's `Album`."""

    songs: Annotated[list[Song], Distinct(by="title")]


DISTINCT_TITLES_SCHEMA = DistinctTitlesAlbum.model_json_schema()

# The album student's recipe (`benchmarks/album_training.py`, 40 examples, 30 steps, 20
# held-out movies, greedy): cross-entropy alone gave 20/20 valid albums of which 0 had
# all-distinct song titles, the student copying one title four times; the unlikelihood
# loss against repeating the answer's earlier words gave 11/20 at weight 4; at 8, 18, 8
# and 15/20 over training seeds 0-2; at 16, 14 and 17/20 on seeds 1-2, with lengths
# varying more (top length share 0.12-0.21 against 0.19-0.24) (docs/album-student.md).
ALBUM_TRAINING = TrainConfig(unlikelihood=16.0)

PROMPT_TEMPLATE = (
    "Generate an example album, with an artist and a list of songs. "
    "Using the movie {movie_name} as inspiration."
)

album_program: Program[Album] = Program(PROMPT_TEMPLATE, Album, name="album")

_MOVIE_IN_PROMPT = re.compile(r"Using the movie (.+?) as inspiration\.")


def curated_albums() -> list[dict[str, Any]]:
    """The curated answers: `{"movie_name": ..., "album": {...}}` per movie."""
    text = files("structune").joinpath("data/albums.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def curated_conversations(n: int | None = None) -> list[list[Message]]:
    """The first `n` curated albums (all by default) as training conversations: the
    program's prompt, then the album in canonical JSON."""
    return [
        [
            *album_program.messages({"movie_name": item["movie_name"]}),
            {"role": "assistant", "content": canonical_json(item["album"])},
        ]
        for item in curated_albums()[:n]
    ]


def heldout_movies() -> list[str]:
    text = files("structune").joinpath("data/heldout_movies.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def curated_teacher() -> CallableLLM:
    """A teacher that answers from the curated set, as GPT-4 would (pretty-printed JSON),
    and refuses movies it has no answer for.

    It finds the movie in the last user message ("... Using the movie X as inspiration"),
    so it answers this package's album program and the notebook's LlamaIndex program alike.
    """
    answers = {item["movie_name"]: item["album"] for item in curated_albums()}

    def answer(messages: Sequence[Message]) -> str:
        found = _MOVIE_IN_PROMPT.search(messages[-1]["content"])
        album = answers.get(found.group(1)) if found else None
        if album is None:
            raise UserError("the curated teacher only knows the movies in data/albums.jsonl")
        return json.dumps(album, indent=2, ensure_ascii=False)

    return CallableLLM(answer, model_id="curated:albums-v1")
