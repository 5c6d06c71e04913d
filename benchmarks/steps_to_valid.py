"""How many training steps the album task needs, from the notebook's 14 examples.

    .venv/bin/python benchmarks/steps_to_valid.py [--steps 5,10,20,40] [--prompts 20]

For each step count, one adapter is trained from scratch on the first 14 curated album
examples (batch 4, the trainer's defaults otherwise: the learning-rate schedule depends
on the run's length, so a run is not the prefix of a longer one), then answers held-out
movies with plain greedy decoding. Prints valid / cut-off counts per step count and the
first that reaches 95% valid.
"""

from __future__ import annotations

import argparse

from structune import TrainConfig, finetune
from structune.evaluate.compare import compare
from structune.llms.local import LocalLLM
from structune.tasks.albums import (
    album_program,
    curated_conversations,
    heldout_movies,
)

NOTEBOOK_EXAMPLES = 14


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="5,10,20,40")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=384)
    args = parser.parse_args()

    conversations = curated_conversations(NOTEBOOK_EXAMPLES)
    inputs = [{"movie_name": m} for m in heldout_movies()[: args.prompts]]
    print(f"| steps | final loss | valid of {len(inputs)} | cut off | train s |")
    print("|---|---|---|---|---|")
    reached = None
    for steps in [int(s) for s in args.steps.split(",")]:
        config = TrainConfig(max_steps=steps, batch_size=4, checkpoint_every=0)
        adapter = finetune(conversations, config=config, task="album", progress=False)
        result = compare(
            album_program,
            {adapter.id: LocalLLM.load(adapter=adapter.id)},
            inputs,
            max_tokens=args.max_tokens,
        )
        answers = result.answers[adapter.id]
        valid = sum(a.valid for a in answers)
        cut_off = sum(a.truncated for a in answers)
        print(
            f"| {steps} | {adapter.loss_history[-1]:.3f} | {valid} | {cut_off} "
            f"| {adapter.train_seconds:.0f} |",
            flush=True,
        )
        if reached is None and valid >= 0.95 * len(inputs):
            reached = steps
    print(f"first step count with >= 95% valid: {reached if reached else 'none tried'}")


if __name__ == "__main__":
    main()
