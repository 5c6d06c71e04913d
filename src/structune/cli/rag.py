"""Structured answers over a paper: `ingest`, `questions`, `retrieve`, `ask`.

Each command checks its arguments (files, questions, model specs) before it loads the
index, whose embedding model takes seconds to load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from structune.cli import args as flags
from structune.errors import UserError
from structune.rag.ingest import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE


def add_commands(command: Any) -> None:
    ing = command("ingest", _ingest, "PDF → chunks → embeddings → a vector index on disk")
    ing.add_argument("pdf", type=Path, help="the PDF to index")
    ing.add_argument("--index", required=True, type=Path, help="the index folder")
    ing.add_argument(
        "--chunk-size", type=flags.positive, default=DEFAULT_CHUNK_SIZE, help="tokens per chunk"
    )
    ing.add_argument(
        "--chunk-overlap",
        type=flags.non_negative,
        default=DEFAULT_CHUNK_OVERLAP,
        help="tokens shared by chunks",
    )

    qs = command("questions", _questions, "write questions over an index's chunks (JSONL)")
    qs.add_argument("--index", required=True, type=Path, help="the index folder")
    qs.add_argument("--out", required=True, type=Path, help="the JSONL file to write")
    qs.add_argument("--llm", help="a model spec to write N questions per chunk")
    qs.add_argument(
        "--offline",
        choices=["headings", "passages"],
        default="headings",
        help="without --llm: one question per section heading, or one per chunk",
    )
    qs.add_argument(
        "--per-chunk", type=flags.positive, default=1, help="with --llm: questions per chunk"
    )
    qs.add_argument("--workers", type=flags.positive, default=4, help="chunks in flight at once")
    flags.sampling_flags(qs)
    flags.base_url_flag(qs)

    ret = command(
        "retrieve", _retrieve, "questions → program inputs with their retrieved context (JSONL)"
    )
    ret.add_argument("--index", required=True, type=Path, help="the index folder")
    ret.add_argument("--questions", required=True, type=Path, help="the questions (JSONL)")
    ret.add_argument("--out", required=True, type=Path, help="inputs for record / compare")
    ret.add_argument("--top-k", type=flags.positive, default=1, help="chunks per question")

    ask = command("ask", _ask, "a structured answer to a question over an index, with sources")
    ask.add_argument("question", help="the question")
    ask.add_argument("--index", required=True, type=Path, help="the index folder")
    ask.add_argument("--model", default="smollm2-135m", help="a model spec")
    ask.add_argument("--program", default="citations", help="the program to answer with")
    ask.add_argument("--top-k", type=flags.positive, default=1, help="chunks to answer from")
    ask.add_argument("--max-tokens", type=flags.positive, default=1024, help="answer budget")
    flags.sampling_flags(ask)
    ask.add_argument("--constrained", action="store_true", help="decode under the schema")
    flags.base_url_flag(ask)


def _ingest(args: argparse.Namespace) -> None:
    from structune.rag.ingest import ingest

    s = ingest(args.pdf, args.index, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    how = "already indexed" if s.reused else f"{s.pages} pages → {s.chunks} chunks"
    print(f"{args.pdf}: {how} in {s.index_dir} ({s.seconds:.1f} s)")


def _questions(args: argparse.Namespace) -> None:
    from structune.llms.sampling import GREEDY
    from structune.rag.ingest import load_index
    from structune.rag.questions import (
        generate_questions,
        heading_questions,
        passage_questions,
        save_questions,
    )

    flags.output_file(args.out)
    sampling = flags.sampling_from(args)
    if not args.llm and (args.per_chunk != 1 or sampling != GREEDY):
        raise UserError(
            "--per-chunk and the sampling flags set how an --llm writes questions; give --llm"
        )
    writer = flags.load_models([args.llm], args)[args.llm] if args.llm else None
    nodes = list(load_index(args.index).docstore.docs.values())
    if writer is not None:
        from structune.integrations.llama_index import StructuneLLM

        llm = StructuneLLM(
            backend=writer,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            repetition_penalty=sampling.repetition_penalty,
        )
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

    flags.output_file(args.out)
    questions = load_questions(args.questions)
    inputs = retrieved_inputs(load_index(args.index), questions, top_k=args.top_k)
    write_atomically(args.out, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in inputs))
    print(f"wrote {len(inputs)} inputs to {args.out}")


def _ask(args: argparse.Namespace) -> None:
    from structune.rag.answer import ask
    from structune.rag.ingest import load_index
    from structune.tasks import load_program

    if not args.question.strip():
        raise UserError("the question is empty; ask something about the document")
    program = load_program(args.program)
    sampling = flags.sampling_from(args)
    (model,) = flags.load_models([args.model], args).values()
    (answer,) = ask(
        load_index(args.index),
        [args.question],
        model,
        program,
        top_k=args.top_k,
        constrained=args.constrained,
        max_tokens=args.max_tokens,
        sampling=sampling,
    )
    if answer.answer is not None:
        print(answer.answer.model_dump_json(indent=2))
    else:
        cut = " (cut off by --max-tokens)" if answer.truncated else ""
        print(f"no valid answer{cut}: {answer.error}\n{answer.text}")
    for source in answer.sources:
        where = source.node.metadata.get("file_name", "?")
        print(f"source: {where} chunk {source.node.node_id[:8]} (similarity {source.score:.3f})")
