"""Album student: training settings vs loss and held-out answer content (#49).

    .venv/bin/python benchmarks/album_training.py [--runs "epochs=3,lr=1e-3" ...]
        [--examples 40] [--heldout 20] [--base smollm2-135m] [--sampled 0.7 ...]

Each run fine-tunes the base on the first `--examples` curated albums (as the demo does)
with the settings given (any `TrainConfig` field; `lr` is `learning_rate`), then answers
the held-out movies greedily, plainly, with no distinct constraint: the demo's "tuned" row
(and, with `--sampled T`, the same adapter sampled at temperature T, seed 0).
A row per run: steps, train seconds, the loss at the end (mean of the last 5 steps), valid,
albums whose song titles are all distinct, the share of songs carrying the most common
`length_seconds`, the share of leaf strings copied verbatim from the training answers, and
answers echoing one string in two fields. The issue's targets: all-distinct >= 90%, top
length share <= 15%, valid >= 95%, inside the demo's 15 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from structune.adapters import AdapterManifest
from structune.evaluate.compare import Comparison, compare
from structune.llms.local import LocalLLM
from structune.llms.sampling import GREEDY, Sampling
from structune.tasks.albums import (
    album_program,
    curated_albums,
    curated_conversations,
    heldout_movies,
)
from structune.train.config import TrainConfig
from structune.train.lora import finetune

ALIASES = {"lr": "learning_rate", "r": "lora_r", "alpha": "lora_alpha"}


def parse_run(text: str) -> TrainConfig:
    """`"epochs=6,lr=2e-3"` → a TrainConfig with those fields changed."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        name = ALIASES.get(key.strip(), key.strip())
        if name not in types:
            raise SystemExit(f"--runs: no TrainConfig field {key!r}")
        kind = str(types[name])
        changes[name] = (
            value.lower() in ("1", "true", "yes")
            if "bool" in kind
            else int(value)
            if kind.startswith("int")
            else float(value)
        )
    return dataclasses.replace(TrainConfig(), **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["epochs=3"], help="settings per run")
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--heldout", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--show", type=int, default=2, help="answers printed per run")
    parser.add_argument(
        "--sampled",
        type=float,
        nargs="*",
        default=[],
        metavar="T",
        help="also answer with each run's adapter sampled at these temperatures (seed 0)",
    )
    args = parser.parse_args()

    curated = curated_albums()[: args.examples]
    conversations = curated_conversations(args.examples)
    inputs = [{"movie_name": m} for m in heldout_movies()[: args.heldout]]
    rows = []
    for run in args.runs:
        config = parse_run(run)
        started = time.perf_counter()
        adapter = finetune(conversations, base=args.base, config=config, task="album")
        train_s = time.perf_counter() - started
        tuned = LocalLLM.load(adapter=adapter.id)
        decodings = [("", GREEDY)] + [
            (f", T={t}", Sampling(temperature=t, seed=0)) for t in args.sampled
        ]
        for label, sampling in decodings:
            started = time.perf_counter()
            comparison = compare(
                album_program,
                {run: tuned},
                inputs,
                max_tokens=args.max_tokens,
                sampling=sampling,
                training_answers=[c["album"] for c in curated],
            )
            answer_s = time.perf_counter() - started
            rows.append(row(run + label, adapter, train_s, comparison, answer_s))
            for answer in comparison.answers[run][: args.show]:
                print(f"  {answer.inputs['movie_name']}: {answer.text[:300]}")
        print_table(rows)


def row(
    name: str,
    adapter: AdapterManifest,
    train_s: float,
    comparison: Comparison,
    answer_s: float,
) -> tuple[Any, ...]:
    score = comparison.scores[0]
    content = score.content
    assert content is not None
    lengths = content.top_values.get("songs[].length_seconds")
    tail = adapter.loss_history[-5:]
    return (
        name,
        adapter.steps,
        train_s,
        sum(tail) / len(tail),
        f"{score.valid}/{score.answers}",
        f"{content.all_distinct}/{content.with_lists}",
        f"{lengths.share:.3f} ({lengths.value}: {lengths.count}/{lengths.total})"
        if lengths
        else "-",
        f"{content.copied_rate or 0:.2f}",
        f"{content.echoed}/{content.answers}",
        answer_s,
        adapter.id,
    )


def print_table(rows: list[tuple[Any, ...]]) -> None:
    print(
        "\n| run | steps | train s | loss end | valid | all-distinct | top length share "
        "| copied | echo | answer s | adapter |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run, steps, train_s, loss, valid, distinct, share, copied, echo, answer_s, aid in rows:
        print(
            f"| {run} | {steps} | {train_s:.0f} | {loss:.3f} | {valid} | {distinct} | {share} "
            f"| {copied} | {echo} | {answer_s:.0f} | {aid} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
