"""Training memory with and without gradient checkpointing, side by side in one run, per base.

    .venv/bin/python benchmarks/train_memory.py --papers DIR [--examples 8] [--steps 2]
        [--batch-size 4] [--bases smollm2-135m qwen2.5-coder-0.5b]
    .venv/bin/python benchmarks/train_memory.py --data albums --bases smollm2-135m \
        qwen2.5-coder-0.5b

Trains each base (default SmolLM2-135M-Instruct) with `finetune` on the longest of the
citation benchmark's 40 training answers (`trainer_vs_hf.citation_conversations`: windows of
instructgpt.pdf in `--papers DIR`, e.g. `--papers ../shared/data/papers` where this workplace
keeps it, with the offline teacher's answers, ~1,000-1,400 tokens each) or, with `--data
albums`, on the curated album answers (~250 tokens each; no papers needed), once as
`TrainConfig` defaults it and once with `gradient_checkpointing=True`, each in a fresh process
so that its peak resident memory (`ru_maxrss`) is its own. A third process only loads the
model, for what training adds on top. Prints peak memory, seconds per step, tokens/s and the
final loss of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import add_papers_flag, check_papers

ROWS = {  # row name: what its process does
    "model loaded, no training": "load",
    "structune train (defaults)": "store",
    "structune train --gradient-checkpointing": "recompute",
}


def training_conversations(data: str, papers: Path | None) -> list[Any]:
    if data == "albums":
        from structune.tasks.albums import curated_conversations

        return curated_conversations()
    from trainer_vs_hf import citation_conversations

    return citation_conversations(papers)


def child(
    mode: str, base: str, examples: int, steps: int, batch_size: int, data: str, papers: Path | None
) -> None:
    """Run one row in this process and print its figures as JSON."""
    from structune import TrainConfig, finetune
    from structune.models.loading import load_model

    report: dict[str, float] = {}
    if mode == "load":
        model, _ = load_model(base, dtype="float32")
        # the weights may be mapped from the safetensors file, resident only once read
        sum(float(p.detach().sum()) for p in model.parameters())
    else:
        conversations = training_conversations(data, papers)
        longest = sorted(conversations, key=lambda c: -sum(len(m["content"]) for m in c))
        config = TrainConfig(
            max_steps=steps,
            batch_size=batch_size,
            max_length=2048,
            checkpoint_every=0,
            gradient_checkpointing=mode == "recompute",
        )
        began = time.perf_counter()
        manifest = finetune(
            longest[:examples], base=base, config=config, task="bench", progress=False
        )
        report |= {
            "seconds_per_step": manifest.train_seconds / steps,
            "tokens_per_s": manifest.tokens_trained / manifest.train_seconds,
            "wall_s": time.perf_counter() - began,
            "tokens": manifest.tokens_trained,
            "final_loss": manifest.loss_history[-1],
            "bf16": float(manifest.config["bf16"]),
        }
    report["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8, help="the longest N of the 40")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--bases", nargs="+", default=["smollm2-135m"], metavar="BASE")
    parser.add_argument("--data", choices=["citations", "albums"], default="citations")
    add_papers_flag(
        parser, "a folder holding instructgpt.pdf (for --data citations)", required=False
    )
    parser.add_argument("--child", choices=list(ROWS.values()), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data == "citations":
        if args.papers is None:
            parser.error(
                "--data citations reads --papers DIR/instructgpt.pdf (or pass --data albums)"
            )
        check_papers(parser, args.papers, ["instructgpt.pdf"])
    if args.child:
        child(
            args.child, args.bases[0], args.examples, args.steps, args.batch_size, args.data,
            args.papers,
        )  # fmt: skip
        return

    results = {}
    for base in args.bases:
        for name, mode in ROWS.items():
            command = [sys.executable, __file__, "--child", mode, "--bases", base]
            command += ["--examples", str(args.examples), "--steps", str(args.steps)]
            command += ["--batch-size", str(args.batch_size), "--data", args.data]
            command += ["--papers", str(args.papers)] if args.papers else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{base}, {name} failed:\n{done.stderr[-3000:]}")
            results[base, name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{base}, {name}: {results[base, name]}", flush=True)

    print(
        f"\n{args.examples} longest {args.data} examples, batch {args.batch_size}, "
        f"{args.steps} steps\n"
    )
    print("| base | run | peak memory MB | s/step | tokens/s | tokens | final loss |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (base, name), r in results.items():
        if "seconds_per_step" in r:
            print(
                f"| {base} | {name} | {r['peak_mb']:.0f} | {r['seconds_per_step']:.1f} "
                f"| {r['tokens_per_s']:.0f} | {r['tokens']} | {r['final_loss']:.4f} |"
            )
        else:
            print(f"| {base} | {name} | {r['peak_mb']:.0f} | | | | |")
    for base in args.bases:
        loaded, stored, recomputed = (results[base, name] for name in ROWS)
        print(
            f"\n{base}, gradient checkpointing: training adds "
            f"{recomputed['peak_mb'] - loaded['peak_mb']:.0f} MB instead of "
            f"{stored['peak_mb'] - loaded['peak_mb']:.0f} MB, at "
            f"{recomputed['seconds_per_step'] / stored['seconds_per_step']:.2f}x the time a step"
        )


if __name__ == "__main__":
    main()
