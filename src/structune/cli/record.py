"""Recording and datasets: `record`, `import`, `export`, `datasets`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from structune.cli import args as flags


def add_commands(command: Any) -> None:
    rec = command("record", _record, "record a teacher's answers to a program into the dataset")
    flags.program_flags(rec)
    rec.add_argument(
        "--inputs",
        required=True,
        type=Path,
        help="JSONL of input variables, or "
        "a text file with one value per line for one-variable programs",
    )
    rec.add_argument("--teacher", required=True, help="openai:MODEL, local:BASE[+ADAPTER], ...")
    rec.add_argument(
        "--batch-size", type=flags.positive, default=8, help="inputs asked per teacher call"
    )
    rec.add_argument(
        "--max-tokens", type=flags.positive, default=1024, help="answer budget per input"
    )
    flags.sampling_flags(rec)
    rec.add_argument("--constrained", action="store_true", help="hold the teacher to the schema")
    flags.base_url_flag(rec)
    flags.db_flag(rec)

    imp = command("import", _import, "import a JSONL file (OpenAI chat fine-tuning format)")
    imp.add_argument("path", type=Path, help="the JSONL file")
    imp.add_argument("--task", help="task name for plain {'messages': ...} lines")
    imp.add_argument("--teacher", help="teacher name for plain lines (default: import:FILE)")
    imp.add_argument(
        "--program",
        help="validate plain lines against this program's schema (importing again with "
        "another program checks the stored answers again)",
    )
    flags.db_flag(imp)

    exp = command("export", _export, "export recorded examples as JSONL")
    exp.add_argument("path", type=Path, help="the JSONL file to write")
    exp.add_argument("--task", help="only this task (default: every task)")
    exp.add_argument("--valid-only", action="store_true", help="only valid answers")
    flags.db_flag(exp)

    datasets = command("datasets", _datasets, "list recorded tasks and their example counts")
    datasets.add_argument("--json", action="store_true", help="print the list as JSON")
    flags.db_flag(datasets)
    actions = datasets.add_subparsers(metavar="ACTION")
    rm = actions.add_parser("rm", help="remove every recorded example of a task")
    rm.add_argument("task", help="the task to remove (`structune datasets` lists them)")
    # SUPPRESS: `datasets --db X rm TASK` keeps X (a subparser's own default would win)
    rm.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="dataset file")
    rm.set_defaults(handler=_datasets_rm)


def _record(args: argparse.Namespace) -> None:
    from structune.record.recorder import record
    from structune.tasks import load_program, read_inputs

    program = load_program(args.program, template=args.template)
    inputs = read_inputs(args.inputs, program)
    sampling = flags.sampling_from(args)
    (teacher,) = flags.load_models([args.teacher], args).values()
    store, note = _writable_store(args)
    with store:
        s = record(
            program,
            teacher,
            inputs,
            store=store,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
            sampling=sampling,
            constrained=args.constrained,
        )
    print(
        f"recorded {s.recorded}{note} ({s.valid} valid, {s.invalid} invalid); skipped "
        f"{s.skipped} already recorded"
        + (
            f"; the teacher failed on {s.failed} (stored with the cause, asked again on the "
            f"next run): {s.first_failure}"
            if s.failed
            else ""
        )
    )


def _import(args: argparse.Namespace) -> None:
    from structune.record.jsonl import import_jsonl
    from structune.tasks import load_program

    program = load_program(args.program) if args.program else None
    store, note = _writable_store(args)
    with store:
        s = import_jsonl(args.path, store, program=program, task=args.task, teacher=args.teacher)
    again = f"; {s.revalidated} stored answers checked again" if s.revalidated else ""
    print(f"imported {s.added} examples from {args.path}{note} ({s.skipped} already there{again})")
    if s.invalid:
        against = f"program {program.name!r}" if program else "a JSON object"
        print(
            f"warning: {s.invalid} of {s.lines} answers are not valid against {against}, so "
            f"they are stored as invalid and never trained on (first: {s.first_error}); if "
            "that is the wrong program, import again with the right --program to check them "
            "again",
            file=sys.stderr,
        )


def _export(args: argparse.Namespace) -> None:
    from structune.record.jsonl import export_jsonl

    flags.output_file(args.path)
    with flags.open_store(args, create=False) as store:
        n = export_jsonl(store, args.path, task=args.task, valid_only=args.valid_only)
    print(f"wrote {n} examples to {args.path}")


def _datasets(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    with flags.open_store(args, create=False) as store:
        tasks = store.summary()
        if args.json:
            print(json.dumps({"db": str(store.path), "tasks": [asdict(t) for t in tasks]}))
            return
        print(f"{store.path}")
        for t in tasks:
            print(
                f"  {t.task:<20} {t.examples:>6} examples  {t.valid:>6} valid  "
                + (f"{t.failed:>4} failed (asked again on the next record)  " if t.failed else "")
                + f"teachers: {', '.join(t.teachers)}"
            )


def _datasets_rm(args: argparse.Namespace) -> None:
    with flags.open_store(args, create=False) as store:
        removed = store.delete_task(args.task)
        print(f"removed task {args.task!r}: {removed} examples, from {store.path}")


def _writable_store(args: argparse.Namespace) -> tuple[Any, str]:
    """The dataset to write into, created if missing, and a note to print if it was."""
    from structune.paths import default_db_path

    path = args.db if args.db is not None else default_db_path()
    note = "" if Path(path).exists() else f" into a new dataset at {path}"
    return flags.open_store(args, create=True), note
