"""Training memory with and without gradient checkpointing, side by side in one run.

    .venv/bin/python benchmarks/train_memory.py --papers DIR [--examples 8] [--steps 2]
        [--batch-size 4]

Trains SmolLM2-135M-Instruct with `finetune` on the longest of the citation benchmark's 40
training answers (`trainer_vs_hf.citation_conversations`: windows of instructgpt.pdf in
`--papers DIR`, e.g. `--papers ../shared/data/papers` where this workplace keeps it, with the
offline teacher's answers, ~1,000-1,400 tokens each), once as `TrainConfig` defaults it and
once with `gradient_checkpointing=True`, each in a fresh process so that its peak resident
memory (`ru_maxrss`) is its own. A third process only loads the model, for what training
adds on top. Prints peak memory, seconds per step and the final loss of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import add_papers_flag, check_papers

ROWS = {  # row name: what its process does
    "model loaded, no training": "load",
    "structune train (defaults)": "store",
    "structune train --gradient-checkpointing": "recompute",
}


def child(mode: str, examples: int, steps: int, batch_size: int, papers: Path) -> None:
    """Run one row in this process and print its figures as JSON."""
    from structune import TrainConfig, finetune
    from structune.models.loading import load_model

    report: dict[str, float] = {}
    if mode == "load":
        load_model("smollm2-135m", dtype="float32")
    else:
        from trainer_vs_hf import citation_conversations

        conversations = citation_conversations(papers)
        longest = sorted(conversations, key=lambda c: -sum(len(m["content"]) for m in c))
        config = TrainConfig(
            max_steps=steps,
            batch_size=batch_size,
            max_length=2048,
            checkpoint_every=0,
            gradient_checkpointing=mode == "recompute",
        )
        began = time.perf_counter()
        manifest = finetune(longest[:examples], config=config, task="bench", progress=False)
        report |= {
            "seconds_per_step": manifest.train_seconds / steps,
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
    add_papers_flag(parser, "a folder holding instructgpt.pdf")
    parser.add_argument("--child", choices=list(ROWS.values()), help=argparse.SUPPRESS)
    args = parser.parse_args()
    check_papers(parser, args.papers, ["instructgpt.pdf"])
    if args.child:
        child(args.child, args.examples, args.steps, args.batch_size, args.papers)
        return

    results = {}
    for name, mode in ROWS.items():
        command = [sys.executable, __file__, "--child", mode]
        command += ["--examples", str(args.examples), "--steps", str(args.steps)]
        command += ["--batch-size", str(args.batch_size), "--papers", str(args.papers)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]}", flush=True)

    print(
        f"\n{args.examples} longest citation examples, batch {args.batch_size}, "
        f"{args.steps} steps\n"
    )
    print("| run | peak memory MB | s/step | tokens | final loss |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        if "seconds_per_step" in r:
            print(
                f"| {name} | {r['peak_mb']:.0f} | {r['seconds_per_step']:.1f} "
                f"| {r['tokens']} | {r['final_loss']:.4f} |"
            )
        else:
            print(f"| {name} | {r['peak_mb']:.0f} | | | |")
    stored, recomputed = (results[name] for name in list(ROWS)[1:])
    loaded = results["model loaded, no training"]["peak_mb"]
    print(
        f"\ngradient checkpointing: training adds {recomputed['peak_mb'] - loaded:.0f} MB "
        f"instead of {stored['peak_mb'] - loaded:.0f} MB, at "
        f"{recomputed['seconds_per_step'] / stored['seconds_per_step']:.2f}x the time a step"
    )


if __name__ == "__main__":
    main()
