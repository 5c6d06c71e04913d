"""Album student: greedy, sampled, and sampled only in the fields no input decides (#49).

    .venv/bin/python benchmarks/free_fields.py [--adapters ID ...] [--fields length_seconds]
        [--temperature 0.7] [--seed 0] [--heldout 20]

Without `--adapters`, trains the demo's recipe (`ALBUM_TRAINING`) on the first 40 curated
albums first. Each adapter answers the held-out movies plainly three ways: greedy, sampled
everywhere, and greedy except inside `--fields` (`research.free_fields.free_field_sampling`).
A row per adapter and way: valid, albums whose song titles are all distinct, the most common
`length_seconds` with its count, the share of strings copied from training, and the albums
whose song titles are exactly the greedy answer's (how much of the answer stays greedy).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import common  # noqa: F401  (puts the repository root on the path, for research/)

from research.free_fields import free_field_sampling
from structune.evaluate.compare import Comparison, compare
from structune.llms.local import LocalLLM
from structune.llms.sampling import GREEDY, Sampling
from structune.tasks.albums import (
    ALBUM_TRAINING,
    album_program,
    curated_albums,
    curated_conversations,
    heldout_movies,
)
from structune.train.lora import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", nargs="*", default=[], help="album adapters to answer")
    parser.add_argument("--fields", nargs="+", default=["length_seconds"])
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=192)
    args = parser.parse_args()

    adapters = args.adapters or [
        finetune(curated_conversations(40), config=ALBUM_TRAINING, task="album").id
    ]
    inputs = [{"movie_name": m} for m in heldout_movies()[: args.heldout]]
    training = [c["album"] for c in curated_albums()[:40]]
    sampled = Sampling(temperature=args.temperature, seed=args.seed)
    print(
        "| adapter | decoding | valid | all-distinct | top length | copied | titles as greedy "
        "| answer s |\n|---|---|---|---|---|---|---|---|"
    )
    for adapter in adapters:
        tuned = LocalLLM.load(adapter=adapter)
        ways = [
            ("greedy", tuned, GREEDY),
            (f"sampled, T={args.temperature:g}", tuned, sampled),
            (
                f"greedy, {','.join(args.fields)} sampled",
                free_field_sampling(tuned, args.fields),
                sampled,
            ),
        ]
        greedy_titles: list[Any] = []
        for name, llm, sampling in ways:
            started = time.perf_counter()
            comparison = compare(
                album_program,
                {name: llm},
                inputs,
                max_tokens=args.max_tokens,
                sampling=sampling,
                training_answers=training,
            )
            titles = song_titles(comparison, name)
            greedy_titles = greedy_titles or titles
            same = sum(t is not None and t == g for t, g in zip(titles, greedy_titles, strict=True))
            print(row(adapter, name, comparison, same, time.perf_counter() - started), flush=True)


def song_titles(comparison: Comparison, name: str) -> list[Any]:
    """Each answer's song titles in order; None for an answer that is not valid."""
    return [
        [song["title"] for song in json.loads(a.text)["songs"]] if a.valid else None
        for a in comparison.answers[name]
    ]


def row(adapter: str, name: str, comparison: Comparison, same: int, answer_s: float) -> str:
    score = comparison.scores[0]
    content = score.content
    assert content is not None
    top = content.top_values.get("songs[].length_seconds")
    length = f"{top.share:.3f} ({top.value}: {top.count}/{top.total})" if top else "-"
    return (
        f"| {adapter} | {name} | {score.valid}/{score.answers} "
        f"| {content.all_distinct}/{content.with_lists} | {length} "
        f"| {content.copied_rate or 0:.2f} | {same}/{score.answers} | {answer_s:.0f} |"
    )


if __name__ == "__main__":
    main()
