"""Using and comparing models: `compare`, `eval`, `prompt`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from structune.cli import args as flags
from structune.errors import UserError


def add_commands(command: Any) -> None:
    cmp = command("compare", _compare, "compare models on a program over held-out inputs")
    flags.program_flags(cmp)
    cmp.add_argument(
        "--inputs", required=True, type=Path, help="held-out inputs (JSONL, or one per line)"
    )
    cmp.add_argument("--model", action="append", required=True, help="repeatable: a model spec")
    cmp.add_argument("--max-tokens", type=flags.positive, default=384, help="answer budget")
    flags.sampling_flags(cmp)
    cmp.add_argument(
        "--constrained",
        action="store_true",
        help="decode every model under a grammar compiled from the schema",
    )
    flags.relax_flag(cmp)
    training_db_flag(cmp)
    cmp.add_argument("--json", type=Path, help="also write the comparison as JSON here")
    flags.base_url_flag(cmp)

    ev = command(
        "eval",
        _eval,
        "evaluate models on held-out inputs: rates, field agreement with a reference, speed; "
        "a table, JSON and an HTML report",
    )
    flags.program_flags(ev)
    ev.add_argument(
        "--inputs", required=True, type=Path, help="held-out inputs (JSONL, or one per line)"
    )
    ev.add_argument("--model", action="append", required=True, help="repeatable: a model spec")
    reference = ev.add_mutually_exclusive_group()
    reference.add_argument(
        "--reference", metavar="SPEC", help="a teacher whose answers are the reference (a row too)"
    )
    reference.add_argument(
        "--gold", type=Path, help="JSONL of reference answers, one per input line"
    )
    ev.add_argument(
        "--constrained",
        action="store_true",
        help="decode the --model models under a grammar compiled from the schema",
    )
    flags.relax_flag(ev)
    training_db_flag(ev)
    ev.add_argument("--max-tokens", type=flags.positive, default=384, help="answer budget")
    flags.sampling_flags(ev)
    ev.add_argument("--json", type=Path, help="also write the report as JSON here")
    ev.add_argument("--html", type=Path, help="also write the report as one HTML file here")
    flags.base_url_flag(ev)

    prompt = command(
        "prompt",
        _prompt,
        "one answer from a model: plain text, or JSON held to --schema or a --program",
    )
    prompt.add_argument(
        "text",
        help="the prompt; with --program, the value of its one variable or a JSON object "
        "of its variables",
    )
    prompt.add_argument(
        "-m", "--model", default="smollm2-135m", help="a model spec (`structune models`)"
    )
    shape = prompt.add_mutually_exclusive_group()
    shape.add_argument(
        "--schema", help="a JSON Schema (inline JSON or a file) the answer must follow"
    )
    shape.add_argument("--program", help="a program: built-in name or module:attribute")
    prompt.add_argument(
        "--template", help="with --program naming a Pydantic model: the prompt template"
    )
    prompt.add_argument(
        "--constrained",
        action="store_true",
        help="decode under a grammar compiled from the schema (local models)",
    )
    flags.relax_flag(prompt)
    prompt.add_argument("--max-tokens", type=flags.positive, default=512, help="answer budget")
    flags.sampling_flags(prompt)
    flags.base_url_flag(prompt)


def training_db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--training-db",
        type=Path,
        metavar="DB",
        help="the dataset the tuned models learned from: its valid answers of the program's "
        "task are what the 'copied' column counts values copied from",
    )


def _training_answers(path: Path | None, task: str) -> list[dict[str, Any]] | None:
    if path is None:
        return None
    from structune.record.store import DatasetStore

    if not path.is_file():
        raise UserError(f"--training-db {path} not found")
    with DatasetStore(path) as store:
        store.require_task(task)
        return [e.parsed for e in store.examples(task, valid=True) if e.parsed is not None]


def _setup(args: argparse.Namespace, specs: list[str]) -> tuple[Any, list[Any], list[Any], Any]:
    """The program, the inputs, the adapters' manifests and the training answers (or None),
    checked before any model loads (the same check for `compare` and `eval`)."""
    flags.check_relax(args)
    from structune.evaluate.report import adapter_manifests, check_setup
    from structune.tasks import load_program, read_inputs

    program = load_program(args.program, template=args.template)
    inputs = read_inputs(args.inputs, program)
    adapters = adapter_manifests(specs)
    check_setup(program, inputs, adapters=adapters)
    flags.output_file(args.json)
    return program, inputs, adapters, _training_answers(args.training_db, program.name)


def _compare(args: argparse.Namespace) -> None:
    from structune.evaluate.compare import compare
    from structune.llms.base import Constrained

    program, inputs, _, training = _setup(args, args.model)
    sampling = flags.sampling_from(args)
    models = flags.load_models(args.model, args)
    if args.constrained:
        models = {f"{spec}+grammar": Constrained(m, relax=args.relax) for spec, m in models.items()}
    comparison = compare(
        program,
        models,
        inputs,
        max_tokens=args.max_tokens,
        sampling=sampling,
        training_answers=training,
    )
    print(comparison.table())
    if args.json:
        comparison.write_json(args.json)
        print(f"wrote {args.json}")


def _eval(args: argparse.Namespace) -> None:
    from structune.evaluate.report import check_setup, evaluate, read_gold, require_matplotlib
    from structune.llms.base import Constrained

    program, inputs, adapters, training = _setup(
        args, [*args.model, *filter(None, [args.reference])]
    )
    gold = read_gold(args.gold, program) if args.gold else None
    check_setup(program, inputs, gold=gold)
    sampling = flags.sampling_from(args)
    flags.output_file(args.html)
    if args.html:
        require_matplotlib()
    models = flags.load_models([args.reference], args) if args.reference else {}
    for spec, llm in flags.load_models([s for s in args.model if s not in models], args).items():
        models[f"{spec}+grammar" if args.constrained else spec] = (
            Constrained(llm, relax=args.relax) if args.constrained else llm
        )
    report = evaluate(
        program,
        models,
        inputs,
        reference=args.reference,
        gold=gold,
        adapters=adapters,
        max_tokens=args.max_tokens,
        sampling=sampling,
        training_answers=training,
    )
    print(report.table())
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}")
    if args.html:
        report.write_html(args.html)
        print(f"wrote {args.html}; open it in a browser")


def _prompt(args: argparse.Namespace) -> None:
    from structune.prompting import prompt_once

    if args.template and not args.program:
        raise UserError("--template goes with --program naming a Pydantic model")
    if args.constrained and not (args.schema or args.program):
        raise UserError("--constrained holds the answer to a schema: give --schema or --program")
    flags.check_relax(args)
    schema = _read_schema(args.schema) if args.schema else None
    sampling = flags.sampling_from(args)
    (model,) = flags.load_models([args.model], args).values()
    answer = prompt_once(
        model,
        args.text,
        schema=schema,
        program=args.program,
        template=args.template,
        constrained=args.constrained,
        relax=args.relax,
        max_tokens=args.max_tokens,
        sampling=sampling,
    )
    print(answer)


def _read_schema(text: str) -> dict[str, Any]:
    """`--schema`: inline JSON, or the path of a file holding it."""
    source = Path(text).read_text(encoding="utf-8") if Path(text).is_file() else text
    try:
        schema = json.loads(source)
    except json.JSONDecodeError as exc:
        where = text if Path(text).is_file() else "--schema"
        raise UserError(
            f"{where} is not JSON ({exc.msg} at column {exc.colno}); give a JSON Schema "
            "inline or the path of a file holding one"
        ) from None
    if not isinstance(schema, dict):
        raise UserError("--schema must be a JSON object (a JSON Schema)")
    return schema
