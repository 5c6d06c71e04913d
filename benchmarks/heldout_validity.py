"""Constrained answers on the 50 held-out album movies: valid, cut off, invalid, per model.

    .venv/bin/python benchmarks/heldout_validity.py [--adapter ID ...] [--prompts 50]

The issue's reliability figure: the base SmolLM2-135M (and any adapters named) decodes
every held-out movie under the album grammar, greedy, within `--max-tokens`. An answer cut
off by the budget counts as cut off, never as valid; one the grammar closed in the budget's
last tokens (`structune.constrain.processor`) parses and counts as valid, and is also
counted apart as "closed early": the model had not ended it on its own. The invalid
answers' reasons and the cut-off answers' last words are printed, so the failure modes
can be read, not just counted. `--plain` adds the base model without the grammar (0/20
valid in the demo: it writes the schema back until cut off).
"""

from __future__ import annotations

import argparse
from collections import Counter

from structune.evaluate.compare import compare
from structune.llms.base import Constrained
from structune.llms.local import LocalLLM
from structune.tasks.albums import album_program, heldout_movies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", action="append", default=[], help="also an adapter id")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument(
        "--plain", action="store_true", help="also the base model without the grammar"
    )
    args = parser.parse_args()

    inputs = [{"movie_name": m} for m in heldout_movies()[: args.prompts]]
    base = LocalLLM.load("smollm2-135m", batch_size=args.batch_size)
    models = {"base, plain": base} if args.plain else {}
    models["base + grammar"] = Constrained(base)
    for adapter in args.adapter:
        models[f"{adapter} + grammar"] = Constrained(
            LocalLLM.load(adapter=adapter, batch_size=args.batch_size)
        )
    comparison = compare(album_program, models, inputs, max_tokens=args.max_tokens)

    print(f"\n{len(inputs)} held-out movies, greedy, max {args.max_tokens} tokens\n")
    print("| model | valid | of which closed early | cut off | finished but invalid | s/answer |")
    print("|---|---|---|---|---|---|")
    for score in comparison.scores:
        invalid = score.answers - score.valid - score.truncated
        print(
            f"| {score.model} | {score.valid}/{score.answers} ({score.valid / score.answers:.0%})"
            f" | {score.closed_early} | {score.truncated} | {invalid} "
            f"| {score.seconds_per_answer:.2f} |"
        )
    for name, answers in comparison.answers.items():
        failures = [a for a in answers if not a.valid]
        if not failures or "plain" in name:
            continue
        print(f"\n{name}: {len(failures)} not valid")
        reasons = Counter(
            "cut off" if a.truncated else (a.error or "invalid").split(";")[0] for a in failures
        )
        for reason, count in reasons.most_common():
            print(f"  {count} x {reason}")
        for a in failures[:5]:
            print(f"  {a.inputs['movie_name']}: ...{a.text[-100:]!r}")


if __name__ == "__main__":
    main()
