"""The `structune` command: one thin subcommand per library call.

Parsing flags and printing results is all that happens here; torch and transformers are
imported only by the subcommands that need them, so `structune --help` stays fast.
Errors structune raises on purpose print as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from structune.errors import StructuneError, UserError
from structune.rag.ingest import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE

Handler = Callable[[argparse.Namespace], None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    # Deprecation notices from the libraries underneath are for us, not for users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        args.handler(args)
    except StructuneError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; recorded work is kept", file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="structune",
        description="Teach a small local model to answer in your schema: "
        "record a teacher, LoRA fine-tune, compare.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    demo = command(
        "demo", _demo, "the notebook end to end: albums, then citations through RAG over a PDF"
    )
    demo.add_argument(
        "--teacher",
        help="record from this model (e.g. openai:gpt-4o) instead of the offline teachers",
    )
    demo.add_argument("--pdf", type=Path, help="the paper for part two (default: a sample)")
    demo.add_argument("--part", choices=["all", "albums", "rag"], default="all")
    demo.add_argument("--heldout", type=_positive, default=20, help="held-out movies to compare on")
    demo.add_argument("--report", type=Path, help="also write the comparison as JSON here")
    _db_flag(demo)
    _train_flags(demo)

    rec = command("record", _record, "record a teacher's answers to a program into the dataset")
    rec.add_argument("--program", default="album", help="built-in name or module:attribute")
    rec.add_argument(
        "--inputs",
        required=True,
        type=Path,
        help="JSONL of input variables, or "
        "a text file with one value per line for one-variable programs",
    )
    rec.add_argument("--teacher", required=True, help="openai:MODEL, local:BASE[+ADAPTER], ...")
    rec.add_argument("--batch-size", type=_positive, default=8)
    rec.add_argument("--max-tokens", type=_positive, default=1024)
    rec.add_argument("--constrained", action="store_true", help="hold the teacher to the schema")
    _db_flag(rec)

    imp = command("import", _import, "import a JSONL file (OpenAI chat fine-tuning format)")
    imp.add_argument("path", type=Path)
    imp.add_argument("--task", help="task name for plain {'messages': ...} lines")
    imp.add_argument("--teacher", help="teacher name for plain lines (default: import:FILE)")
    imp.add_argument("--program", help="validate plain lines against this program's schema")
    _db_flag(imp)

    exp = command("export", _export, "export recorded examples as JSONL")
    exp.add_argument("path", type=Path)
    exp.add_argument("--task")
    exp.add_argument("--valid-only", action="store_true")
    _db_flag(exp)

    datasets = command("datasets", _datasets, "list recorded tasks and their example counts")
    _db_flag(datasets)

    train = command("train", _train, "LoRA fine-tune a base model on recorded examples")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="train on this task's valid examples in the dataset")
    source.add_argument("--jsonl", type=Path, help="train on a JSONL file instead")
    train.add_argument(
        "--program",
        help="with --jsonl: the program its answers follow (album, citations or "
        "package.module:attribute); answers that do not validate are left out, and the "
        "adapter records the program so that `structune eval` can check it fits",
    )
    train.add_argument("--parent", help="continue training this adapter id")
    train.add_argument(
        "--recovery",
        type=_positive,
        metavar="N",
        help="add N answers whose JSON list is given with a mistake in it (an item left out, "
        "written twice or moved) and learned from there on (for a student that loops after "
        "its own imperfect list)",
    )
    _db_flag(train)
    _train_flags(train)
    _checkpoint_flags(train)

    serve = command(
        "serve", _serve, "serve the base model and adapters over an OpenAI-compatible API"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive, default=8000)
    serve.add_argument("--base", default="smollm2-135m", help="base model spec")
    serve.add_argument(
        "--api-key-env",
        default="STRUCTUNE_API_KEY",
        help="require the key in this environment variable, when it is set",
    )
    serve.add_argument(
        "--max-tokens", type=_positive, default=1024, help="cap on max_tokens per request"
    )
    serve.add_argument(
        "--max-batch", type=_positive, default=8, help="the most requests decoded together"
    )
    serve.add_argument(
        "--max-queue",
        type=_positive,
        help="the most requests waiting to decode; more are answered 503 with Retry-After "
        "(default: 4 x --max-batch)",
    )
    serve.add_argument(
        "--compile-timeout",
        type=float,
        default=5.0,
        help="seconds a new response_format schema may take to compile; longer is a 400",
    )

    ship = command(
        "export-adapter",
        _export_adapter,
        "export an adapter: a GGUF LoRA or a merged GGUF for llama.cpp/Ollama, or a merged "
        "transformers model",
    )
    ship.add_argument("adapter", help="adapter id (`structune adapters`)")
    ship.add_argument("out", type=Path, help="the .gguf file, or the directory for --format merged")
    ship.add_argument(
        "--format",
        choices=["gguf-lora", "gguf", "merged"],
        default="gguf-lora",
        help="gguf-lora: a LoRA over the base GGUF; gguf: one GGUF with the adapter merged in; "
        "merged: a transformers model directory",
    )
    ship.add_argument(
        "--type",
        choices=["f32", "f16", "q8_0"],
        default="f32",
        help="tensor type of --format gguf (f32 holds exactly the weights structune serves)",
    )
    ship.add_argument(
        "--modelfile",
        action="store_true",
        help="also write an Ollama Modelfile (weights, chat template, stops) beside the .gguf",
    )

    command("adapters", _adapters, "list trained adapters")
    command("models", _models, "list built-in base models")

    cmp = command("compare", _compare, "compare models on a program over held-out inputs")
    cmp.add_argument("--program", default="album")
    cmp.add_argument("--inputs", required=True, type=Path)
    cmp.add_argument("--model", action="append", required=True, help="repeatable: a model spec")
    cmp.add_argument("--max-tokens", type=_positive, default=384)
    cmp.add_argument(
        "--constrained",
        action="store_true",
        help="decode every model under a grammar compiled from the schema",
    )
    cmp.add_argument("--json", type=Path, help="also write the comparison as JSON here")

    ev = command(
        "eval",
        _eval,
        "evaluate models on held-out inputs: rates, field agreement with a reference, speed; "
        "a table, JSON and an HTML report",
    )
    ev.add_argument("--program", default="album")
    ev.add_argument("--inputs", required=True, type=Path)
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
    ev.add_argument("--max-tokens", type=_positive, default=384)
    ev.add_argument("--json", type=Path, help="also write the report as JSON here")
    ev.add_argument("--html", type=Path, help="also write the report as one HTML file here")

    ing = command("ingest", _ingest, "PDF → chunks → embeddings → a vector index on disk")
    ing.add_argument("pdf", type=Path)
    ing.add_argument("--index", required=True, type=Path, help="the index folder")
    ing.add_argument(
        "--chunk-size", type=_positive, default=DEFAULT_CHUNK_SIZE, help="tokens per chunk"
    )
    ing.add_argument(
        "--chunk-overlap", type=int, default=DEFAULT_CHUNK_OVERLAP, help="tokens shared by chunks"
    )

    qs = command("questions", _questions, "write questions over an index's chunks (JSONL)")
    qs.add_argument("--index", required=True, type=Path)
    qs.add_argument("--out", required=True, type=Path)
    qs.add_argument("--llm", help="a model spec to write N questions per chunk")
    qs.add_argument(
        "--offline",
        choices=["headings", "passages"],
        default="headings",
        help="without --llm: one question per section heading, or one per chunk",
    )
    qs.add_argument("--per-chunk", type=_positive, default=1)
    qs.add_argument("--workers", type=_positive, default=4, help="chunks in flight at once")

    ret = command(
        "retrieve", _retrieve, "questions → program inputs with their retrieved context (JSONL)"
    )
    ret.add_argument("--index", required=True, type=Path)
    ret.add_argument("--questions", required=True, type=Path)
    ret.add_argument("--out", required=True, type=Path, help="inputs for record / compare")
    ret.add_argument("--top-k", type=_positive, default=1)

    ask = command("ask", _ask, "a structured answer to a question over an index, with sources")
    ask.add_argument("question")
    ask.add_argument("--index", required=True, type=Path)
    ask.add_argument("--model", default="smollm2-135m", help="a model spec")
    ask.add_argument("--program", default="citations")
    ask.add_argument("--top-k", type=_positive, default=1)
    ask.add_argument("--max-tokens", type=_positive, default=1024)
    ask.add_argument("--constrained", action="store_true", help="decode under the schema")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", type=Path, help="dataset file (default: $STRUCTUNE_DB or the user data directory)"
    )


def _train_flags(parser: argparse.ArgumentParser) -> None:
    from structune.train.config import TrainConfig

    defaults = TrainConfig()
    parser.add_argument("--base", default="smollm2-135m", help="base model spec")
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument(
        "--max-steps", type=_positive, help="stop after this many steps (wins over epochs)"
    )
    parser.add_argument("--batch-size", type=_positive, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--lora-r", type=_positive, default=defaults.lora_r)
    parser.add_argument(
        "--lora-dropout",
        type=float,
        default=defaults.lora_dropout,
        help="dropout on the adapter's input during training, in [0, 1); a run continued "
        "from --parent keeps the parent's, as it keeps its rank",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: less memory, slower steps",
    )
    parser.add_argument(
        "--group-by-length",
        action="store_true",
        help="batch examples of similar length: faster steps, a higher loss on small datasets",
    )
    parser.add_argument(
        "--decision-weight",
        type=float,
        default=defaults.decision_weight,
        metavar="W",
        help="weigh the answer tokens that open, continue or close a JSON list W times in the "
        "loss (for a student that stops lists early or repeats items)",
    )
    parser.add_argument(
        "--aligned-copies",
        action="store_true",
        help="tokenize answer strings copied from the prompt as the prompt tokenizes them "
        "(for a student that misspells the names it copies)",
    )


def _checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    from structune.train.config import TrainConfig

    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=TrainConfig.checkpoint_every,
        metavar="STEPS",
        help="save a checkpoint every STEPS steps (0: never)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the same run (same data and flags) from its newest checkpoint",
    )


def _train_config(args: argparse.Namespace) -> Any:
    from structune.train.config import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=args.lora_dropout,
        gradient_checkpointing=args.gradient_checkpointing,
        group_by_length=args.group_by_length,
        decision_weight=args.decision_weight,
        aligned_copies=args.aligned_copies,
    )


def _store(args: argparse.Namespace) -> Any:
    from structune.record.store import DatasetStore

    return DatasetStore(args.db)


def _demo(args: argparse.Namespace) -> None:
    from structune.llms.spec import llm_from_spec

    teacher = llm_from_spec(args.teacher) if args.teacher else None
    with _store(args) as store:
        if args.part in ("all", "albums"):
            _demo_albums(args, teacher, store)
        if args.part in ("all", "rag"):
            _demo_rag(args, teacher, store)


def _demo_albums(args: argparse.Namespace, teacher: Any, store: Any) -> None:
    from structune.demo import run_demo

    print("── part one: albums ──")
    result = run_demo(
        teacher=teacher,
        base=args.base,
        store=store,
        heldout=args.heldout,
        config=_train_config(args),
        report_path=args.report,
    )
    _print_recording_and_adapter(result.recording, result.adapter, result.train_examples)
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
    result = run_rag_demo(pdf=args.pdf, teacher=teacher, base=args.base, store=store)
    print(f"{result.pdf}: top-1 retrieval finds the asked chunk {result.retrieval_hit_rate:.0%}")
    _print_recording_and_adapter(result.recording, result.adapter, result.train_examples)
    print(citation_table(result.comparison, result.citation_scores))


def _print_recording_and_adapter(r: Any, a: Any, examples: int) -> None:
    print(f"recorded {r.recorded} new answers ({r.skipped} already there; {r.invalid} invalid)")
    print(
        f"adapter {a.id}: {examples} examples, {a.steps} steps, "
        f"loss {a.loss_history[0]:.3f} → {a.loss_history[-1]:.3f}, "
        f"{a.tokens_trained / a.train_seconds:.0f} tokens/s\n"
    )


def _record(args: argparse.Namespace) -> None:
    from structune.llms.spec import llm_from_spec
    from structune.record.recorder import record
    from structune.tasks import load_program, read_inputs

    program = load_program(args.program)
    inputs = read_inputs(args.inputs, program)
    teacher = llm_from_spec(args.teacher)
    with _store(args) as store:
        s = record(
            program,
            teacher,
            inputs,
            store=store,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
            constrained=args.constrained,
        )
    print(
        f"recorded {s.recorded} ({s.valid} valid, {s.invalid} invalid); skipped {s.skipped} "
        "already recorded"
        + (f"; the teacher failed on {s.failed} (asked again on the next run)" if s.failed else "")
    )


def _import(args: argparse.Namespace) -> None:
    from structune.record.jsonl import import_jsonl
    from structune.tasks import load_program

    program = load_program(args.program) if args.program else None
    with _store(args) as store:
        s = import_jsonl(args.path, store, program=program, task=args.task, teacher=args.teacher)
    print(f"imported {s.added} examples from {args.path} ({s.skipped} already there)")


def _export(args: argparse.Namespace) -> None:
    from structune.record.jsonl import export_jsonl

    with _store(args) as store:
        n = export_jsonl(store, args.path, task=args.task, valid_only=args.valid_only)
    print(f"wrote {n} examples to {args.path}")


def _datasets(args: argparse.Namespace) -> None:
    with _store(args) as store:
        print(f"{store.path}")
        for t in store.summary():
            print(
                f"  {t.task:<20} {t.examples:>6} examples  {t.valid:>6} valid  "
                + (f"{t.failed:>4} failed (asked again on the next record)  " if t.failed else "")
                + f"teachers: {', '.join(t.teachers)}"
            )


def _train(args: argparse.Namespace) -> None:
    import os
    from dataclasses import replace

    from structune.train.lora import finetune
    from structune.train.sources import conversations_from_jsonl, conversations_from_store

    if args.program and not args.jsonl:
        raise UserError("--program goes with --jsonl; a task in the dataset names its program")
    if args.jsonl:
        from structune.tasks import load_program

        program = load_program(args.program) if args.program else None
        conversations = conversations_from_jsonl(args.jsonl, program)
        # unknown without --program: recorded as None, so eval warns instead of refusing
        task, name = (program.name if program else None), args.jsonl.stem
    else:
        with _store(args) as store:
            conversations, task = conversations_from_store(store, args.task), args.task
        name = task
    if args.recovery:
        from structune.train.recovery import recovery_conversations

        recovering = recovery_conversations(conversations, count=args.recovery)
        if not recovering:
            raise UserError(
                "--recovery draws from answers holding a JSON list of 4 items or more, and "
                "this dataset has none: train without it"
            )
        conversations = [*conversations, *recovering]
    config = replace(_train_config(args), checkpoint_every=args.checkpoint_every)
    m = finetune(
        conversations,
        base=args.base,
        config=config,
        parent=args.parent,
        task=task,
        name=name,
        resume=args.resume,
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report, from rank 0
        print(
            f"adapter {m.id}: {m.dataset_size} examples, {m.steps} steps, "
            f"final loss {m.loss_history[-1]:.4f}, saved in {m.path}"
        )


def _serve(args: argparse.Namespace) -> None:
    import os

    import uvicorn

    from structune.serve.app import ServeLimits, create_app

    api_key = os.environ.get(args.api_key_env) or None
    if not args.compile_timeout > 0:
        raise UserError(f"--compile-timeout must be positive, got {args.compile_timeout}")
    limits = ServeLimits(
        max_tokens=args.max_tokens,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        compile_timeout_s=args.compile_timeout,
    )
    app = create_app(base=args.base, api_key=api_key, limits=limits)
    print(
        f"serving on http://{args.host}:{args.port}/v1 (API key {'required' if api_key else 'off'})"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _export_adapter(args: argparse.Namespace) -> None:
    if args.modelfile and args.format == "merged":
        raise UserError("--modelfile goes with the GGUF formats; drop --format merged")
    if args.format == "merged":
        from structune.export.merged import export_merged

        print(f"wrote a standalone model to {export_merged(args.adapter, args.out)}")
        return
    if args.format == "gguf":
        from structune.export.gguf_merged import export_gguf_merged

        path = export_gguf_merged(args.adapter, args.out, tensor_type=args.type)
        print(f"wrote {path}; use it with llama.cpp: Llama('{path}')")
    else:
        from structune.export.gguf_lora import export_gguf_lora

        path = export_gguf_lora(args.adapter, args.out)
        print(f"wrote {path}; use it with llama.cpp: Llama(<base .gguf>, lora_path='{path}')")
    if args.modelfile:
        from structune.export.modelfile import write_modelfile

        modelfile = write_modelfile(args.adapter, path, merged=args.format == "gguf")
        print(f"wrote {modelfile}; build an Ollama model with: ollama create NAME -f {modelfile}")


def _adapters(args: argparse.Namespace) -> None:
    from structune.train.adapters import list_adapters

    for m in list_adapters():
        loss = f"{m.loss_history[-1]:.4f}" if m.loss_history else "-"
        parent = f" parent={m.parent}" if m.parent else ""
        print(
            f"{m.id:<24} base={m.base_model} task={m.task} examples={m.dataset_size} "
            f"steps={m.steps} loss={loss} created={m.created[:19]}{parent}"
        )


def _models(args: argparse.Namespace) -> None:
    from structune.models.loading import BUILTIN_MODELS

    for name, model in BUILTIN_MODELS.items():
        print(f"{name:<16} {model.description}")


def _compare(args: argparse.Namespace) -> None:
    from structune.evaluate.compare import compare
    from structune.llms.base import Constrained
    from structune.llms.spec import llm_from_spec
    from structune.tasks import load_program, read_inputs

    program = load_program(args.program)
    inputs = read_inputs(args.inputs, program)
    models = {spec: llm_from_spec(spec) for spec in args.model}
    if args.constrained:
        models = {f"{spec}+grammar": Constrained(m) for spec, m in models.items()}
    comparison = compare(program, models, inputs, max_tokens=args.max_tokens)
    print(comparison.table())
    if args.json:
        comparison.write_json(args.json)
        print(f"wrote {args.json}")


def _eval(args: argparse.Namespace) -> None:
    from structune.evaluate.report import (
        adapter_manifests,
        check_setup,
        evaluate,
        read_gold,
        require_matplotlib,
    )
    from structune.llms.base import Constrained
    from structune.llms.spec import llm_from_spec
    from structune.tasks import load_program, read_inputs

    program = load_program(args.program)
    inputs = read_inputs(args.inputs, program)
    gold = read_gold(args.gold, program) if args.gold else None
    adapters = adapter_manifests([*args.model, *filter(None, [args.reference])])
    # mistakes surface now, not after the models have loaded and run
    check_setup(program, inputs, gold=gold, adapters=adapters)
    if args.html:
        require_matplotlib()
    models = {args.reference: llm_from_spec(args.reference)} if args.reference else {}
    for spec in args.model:
        name = f"{spec}+grammar" if args.constrained else spec
        if name not in models:
            llm = llm_from_spec(spec)
            models[name] = Constrained(llm) if args.constrained else llm
    report = evaluate(
        program,
        models,
        inputs,
        reference=args.reference,
        gold=gold,
        adapters=adapters,
        max_tokens=args.max_tokens,
    )
    print(report.table())
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}")
    if args.html:
        report.write_html(args.html)
        print(f"wrote {args.html}; open it in a browser")


def _ingest(args: argparse.Namespace) -> None:
    from structune.rag.ingest import ingest

    s = ingest(args.pdf, args.index, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    how = "already indexed" if s.reused else f"{s.pages} pages → {s.chunks} chunks"
    print(f"{args.pdf}: {how} in {s.index_dir} ({s.seconds:.1f} s)")


def _questions(args: argparse.Namespace) -> None:
    from structune.rag.ingest import load_index
    from structune.rag.questions import (
        generate_questions,
        heading_questions,
        passage_questions,
        save_questions,
    )

    nodes = list(load_index(args.index).docstore.docs.values())
    if args.llm:
        from structune.integrations.llama_index import StructuneLLM
        from structune.llms.spec import llm_from_spec

        llm = StructuneLLM(backend=llm_from_spec(args.llm))
        questions = generate_questions(nodes, llm, per_chunk=args.per_chunk, workers=args.workers)
    elif args.offline == "passages":
        questions = passage_questions(nodes)
    else:
        questions = heading_questions(nodes)
    save_questions(questions, args.out)
    print(f"wrote {len(questions)} questions over {len(nodes)} chunks to {args.out}")


def _retrieve(args: argparse.Namespace) -> None:
    from structune.fileio import write_atomically
    from structune.rag.answer import retrieved_inputs
    from structune.rag.ingest import load_index
    from structune.rag.questions import load_questions

    inputs = retrieved_inputs(
        load_index(args.index), load_questions(args.questions), top_k=args.top_k
    )
    write_atomically(args.out, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in inputs))
    print(f"wrote {len(inputs)} inputs to {args.out}")


def _ask(args: argparse.Namespace) -> None:
    from structune.llms.spec import llm_from_spec
    from structune.rag.answer import ask
    from structune.rag.ingest import load_index
    from structune.tasks import load_program

    index = load_index(args.index)
    (answer,) = ask(
        index,
        [args.question],
        llm_from_spec(args.model),
        load_program(args.program),
        top_k=args.top_k,
        constrained=args.constrained,
        max_tokens=args.max_tokens,
    )
    if answer.answer is not None:
        print(answer.answer.model_dump_json(indent=2))
    else:
        cut = " (cut off by --max-tokens)" if answer.truncated else ""
        print(f"no valid answer{cut}: {answer.error}\n{answer.text}")
    for source in answer.sources:
        where = source.node.metadata.get("file_name", "?")
        print(f"source: {where} chunk {source.node.node_id[:8]} (similarity {source.score:.3f})")


if __name__ == "__main__":
    sys.exit(main())
