"""Citation extraction through RAG: base vs fine-tuned student vs teacher, on unseen chunks.

    .venv/bin/python benchmarks/rag_citations.py [--train-paper instructgpt] [--test-paper lora]

The seed notebook's second half, offline and measured. Both papers are ingested (chunks of
`--chunk-size` tokens, embedded with the bundled all-MiniLM-L6-v2); every chunk gets one
question quoting its opening words; each question retrieves its top-1 chunk, which is the
context of the citation program's prompt. The rule-based teacher answers the training
paper's questions (recorded into a dataset, context inside the prompt); the answers that
cite something, plus at most `--empty-share` that cite nothing, tune a LoRA student; every
model answers questions whose retrieved chunk no training example
saw: held-out chunks of the training paper and all chunks of the other paper.

The program is `sourced_citation_program`: the notebook's prompt and `Response`, with each
citation's author checked against the retrieved context, so "valid" also means no invented
author. The student answers three ways: plain decoding, under the JSON grammar, and under
the extractive grammar (authors copied from the context).

Scores: valid answers, answers cut off by `--max-tokens`, authors not in the context, and
precision / recall / F1 of (first author, year) pairs against the author-year citations the
rules find in the retrieved context (answers read by the schema alone). The teacher is that
rule set, so its F1 is 1.0 by construction: the row shows the ceiling. Papers are read
from ../shared/data/papers.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from structune.evaluate.citations import citation_scores, citation_table
from structune.evaluate.compare import compare
from structune.llms.base import Constrained
from structune.llms.callable import CallableLLM
from structune.llms.local import LocalLLM
from structune.paths import home
from structune.rag.dataset import document_inputs, split_by_context
from structune.record import DatasetStore, record
from structune.tasks.citations import citation_teacher, sourced_citation_program
from structune.train.config import TrainConfig
from structune.train.lora import finetune

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "papers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-paper", default="instructgpt")
    parser.add_argument("--test-paper", default="lora")
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--chunk-overlap", type=int, default=50)
    parser.add_argument(
        "--train", type=int, default=80, help="training chunks the teacher answers (the pool)"
    )
    parser.add_argument(
        "--empty-share",
        type=float,
        default=0.25,
        help="the most training examples without any citation, as a share (most chunks of a "
        "paper cite nothing: 38 of 48 in one draw, and a student tuned on them answered [] "
        "to everything)",
    )
    parser.add_argument("--test", type=int, default=20, help="test questions per test set")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="examples per step; padded batches of long prompts take memory in L² "
        "(4 x 1,500 tokens ran out of 24 GB)",
    )
    parser.add_argument("--max-tokens", type=int, default=768)
    parser.add_argument("--adapter", help="evaluate this adapter instead of training one")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    papers = {}
    for paper in (args.train_paper, args.test_paper):
        folder = home() / "rag" / f"{paper}-{args.chunk_size}-{args.chunk_overlap}"
        papers[paper] = found = document_inputs(
            PAPERS / f"{paper}.pdf",
            folder,
            chunk_size=args.chunk_size,
            chunk_overlap=args.chunk_overlap,
        )
        print(
            f"{paper}: {found.ingest.pages} pages, {found.ingest.chunks} chunks, ingest "
            f"{found.ingest.seconds:.1f} s; top-1 retrieval finds the question's own chunk "
            f"for {found.retrieval_hit_rate:.0%}"
        )
    train, heldout = split_by_context(
        papers[args.train_paper].inputs, train=args.train, test=args.test
    )
    other = random.Random(1).sample(
        papers[args.test_paper].inputs, min(args.test, len(papers[args.test_paper].inputs))
    )

    program = sourced_citation_program  # authors checked against the retrieved context
    teacher = CallableLLM(citation_teacher, model_id="rules:citations")
    adapter = args.adapter
    report: dict = {"train_pool": len(train)}
    if adapter is None:
        with DatasetStore(":memory:") as store:
            # Answers whose author is not in the context (the rules repair PDF text) are
            # recorded as invalid and left out of training.
            summary = record(program, teacher, train, store=store, progress=False)
            answered = store.examples(valid=True)
        # Curate: every answer that cites something, and a few that cite nothing.
        cited = [e for e in answered if e.parsed and e.parsed["citations"]]
        empty = [e for e in answered if not (e.parsed and e.parsed["citations"])]
        keep = round(len(cited) * args.empty_share / (1 - args.empty_share))
        conversations = [e.training_conversation() for e in cited + empty[:keep]]
        report |= {"teacher_invalid": summary.invalid, "cited": len(cited), "empty": keep}
        print(
            f"recorded {summary.recorded} teacher answers ({summary.invalid} invalid, left "
            f"out); training on {len(cited)} that cite and {keep} of {len(empty)} that do not"
        )
        started = time.perf_counter()
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, max_length=4096)
        adapter = finetune(conversations, config=config, task="citations").id
        report["train_s"] = time.perf_counter() - started
        minutes = report["train_s"] / 60
        print(f"trained {adapter} on {len(conversations)} examples in {minutes:.1f} min")
    report["adapter"] = adapter

    student = LocalLLM.load(adapter=adapter)
    models = {
        "base": LocalLLM.load("smollm2-135m"),
        "student": student,
        "student + JSON grammar": Constrained(student, extraction="off"),
        "student + extractive grammar": Constrained(student),
        "teacher (rules)": teacher,
    }
    for name, inputs in [
        (f"held-out chunks of {args.train_paper}", heldout),
        (f"chunks of {args.test_paper} (the other paper)", other),
    ]:
        comparison = compare(program, models, inputs, max_tokens=args.max_tokens)
        scores = citation_scores(comparison, inputs)
        gold = sum(s.gold for s in scores.values()) // len(scores)
        print(f"\n{name}: {len(inputs)} questions, {gold} citation pairs in their contexts")
        print(citation_table(comparison, scores))
        report[name] = {
            "comparison": [vars(s) for s in comparison.scores],
            "citations": {m: vars(s) for m, s in scores.items()},
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
