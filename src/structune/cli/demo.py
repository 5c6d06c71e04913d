"""`structune demo`: the notebook end to end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from structune.cli import args as flags
from structune.cli.train import train_config, train_flags
from structune.errors import UserError


def add_commands(command: Any) -> None:
    demo = command(
        "demo", _demo, "the notebook end to end: albums, then citations through RAG over a PDF"
    )
    demo.add_argument(
        "--teacher",
        help="record from this model (e.g. openai:gpt-4o) instead of the offline teachers",
    )
    demo.add_argument("--pdf", type=Path, help="the paper for part two (default: a sample)")
    demo.add_argument(
        "--part", choices=["all", "albums", "rag"], default="all", help="which part to run"
    )
    demo.add_argument(
        "--heldout", type=flags.positive, default=20, help="held-out movies to compare on"
    )
    demo.add_argument("--report", type=Path, help="also write the comparison as JSON here")
    flags.sampling_flags(demo)
    flags.base_url_flag(demo)
    flags.db_flag(demo)
    # the flags train part one; those left out take the album task's recipe
    train_flags(demo, recipe="structune.tasks.albums.ALBUM_TRAINING")


def _demo(args: argparse.Namespace) -> None:
    flags.output_file(args.report)
    _album_training(args).validate()
    if args.pdf is not None and args.part != "albums" and not args.pdf.is_file():
        raise UserError(f"{args.pdf} not found; give the path of a PDF with --pdf, or leave it out")
    teacher = flags.load_models([args.teacher], args)[args.teacher] if args.teacher else None
    with flags.open_store(args, create=True) as store:
        if args.part in ("all", "albums"):
            _demo_albums(args, teacher, store)
        if args.part in ("all", "rag"):
            _demo_rag(args, teacher, store)


def _album_training(args: argparse.Namespace) -> Any:
    from structune.tasks.albums import ALBUM_TRAINING

    return train_config(args, ALBUM_TRAINING)


def _demo_albums(args: argparse.Namespace, teacher: Any, store: Any) -> None:
    from structune.demo import run_demo

    print("── part one: albums ──")
    result = run_demo(
        teacher=teacher,
        base=args.base,
        store=store,
        heldout=args.heldout,
        config=_album_training(args),
        sampling=flags.sampling_from(args),
        report_path=args.report,
    )
    _print_recording(result.recording)
    _print_adapter(result.adapter, result.train_examples)
    print(result.comparison.table())
    for model, answers in result.comparison.answers.items():
        first = answers[0]
        verdict = (
            "valid"
            if first.valid
            else "cut off at max_tokens"
            if first.truncated
            else f"INVALID: {first.error}"
        )
        print(f"\n── {model} on {first.inputs['movie_name']} ({verdict})\n{first.text[:600]}")


def _demo_rag(args: argparse.Namespace, teacher: Any, store: Any) -> None:
    from structune.demo import run_rag_demo
    from structune.evaluate.citations import citation_table

    print("\n── part two: citations through RAG ──")
    result = run_rag_demo(
        pdf=args.pdf,
        teacher=teacher,
        base=args.base,
        store=store,
        sampling=flags.sampling_from(args),
    )
    print(f"{result.pdf}: top-1 retrieval finds the asked chunk {result.retrieval_hit_rate:.0%}")
    _print_recording(result.recording)
    _print_adapter(result.adapter, result.train_examples)
    print(citation_table(result.comparison, result.citation_scores))


def _print_recording(r: Any) -> None:
    print(f"recorded {r.recorded} new answers ({r.skipped} already there; {r.invalid} invalid)")


def _print_adapter(a: Any, examples: int) -> None:
    print(
        f"adapter {a.id}: {examples} examples, {a.steps} steps, "
        f"loss {a.loss_history[0]:.3f} → {a.loss_history[-1]:.3f}, "
        f"{a.tokens_trained / a.train_seconds:.0f} tokens/s\n"
    )
