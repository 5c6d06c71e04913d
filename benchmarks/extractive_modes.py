"""Extractive decoding modes on a list task: bibliography entries → authors, year, title.

    .venv/bin/python benchmarks/extractive_modes.py [--epochs 3] [--adapter ID] [--json F]

A LoRA student is tuned on the 48 training entries of `research.references` (gold
answers checked by hand, entry texts in the repository's data) and answers the 48 test
entries four ways: plain decoding, under the JSON grammar, under the extractive grammar
(every author and the title copied from the entry, authors in any order) and under the
extractive grammar with ordered authors (each after the previous one: no skipping back, no
loop). The base model answers plainly and under the ordered grammar, for scale.

Per row: valid answers (schema and sources), answers cut off by `--max-tokens`, marked
values not found in the entry, per-field accuracy against the gold answers and whole-answer
exact match. The citation task of the same issue is measured by rag_citations.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository root, and with it `research`, on the path)

from research.references import reference_examples, reference_program
from structune.evaluate.compare import compare
from structune.llms.base import Constrained
from structune.llms.local import LocalLLM
from structune.messages import Message
from structune.program import canonical_json
from structune.train.config import TrainConfig
from structune.train.lora import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--adapter", help="evaluate this adapter instead of training one")
    parser.add_argument("--json", type=Path, help="write the comparison here")
    args = parser.parse_args()

    examples = reference_examples()
    train = [e for e in examples if e.split == "train"]
    test = [e for e in examples if e.split == "test"]
    print(f"{len(train)} training and {len(test)} test entries, gold checked by hand")

    adapter = args.adapter
    if adapter is None:
        conversations: list[list[Message]] = [
            [
                *reference_program.messages(e.inputs),
                {"role": "assistant", "content": canonical_json(e.gold.model_dump(mode="json"))},
            ]
            for e in train
        ]
        started = time.perf_counter()
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
        adapter = finetune(conversations, config=config, task="references").id
        minutes = (time.perf_counter() - started) / 60
        print(f"trained {adapter} on {len(conversations)} entries in {minutes:.1f} min")

    base = LocalLLM.load("smollm2-135m", batch_size=8)
    student = LocalLLM.load(adapter=adapter, batch_size=8)
    models = {
        "base": base,
        "base + extractive ordered": Constrained(base),
        "student": student,
        "student + JSON grammar": Constrained(student, extraction="off"),
        "student + extractive": Constrained(student, extraction="unordered"),
        "student + extractive ordered": Constrained(student),
    }
    comparison = compare(
        reference_program,
        models,
        [e.inputs for e in test],
        max_tokens=args.max_tokens,
        gold=[e.gold for e in test],
    )
    print(f"\nadapter {adapter}; {len(test)} test entries\n")
    print(comparison.table())
    scores = {s.model: s for s in comparison.scores}
    json_exact = scores["student + JSON grammar"].exact or 0
    ordered_exact = scores["student + extractive ordered"].exact or 0
    ratio = f"{ordered_exact / json_exact:.2f}x" if json_exact else "n/a (JSON grammar: 0)"
    print(f"\nexact match, ordered vs JSON grammar: {ordered_exact} vs {json_exact} ({ratio})")
    if args.json:
        comparison.write_json(args.json)


if __name__ == "__main__":
    main()
