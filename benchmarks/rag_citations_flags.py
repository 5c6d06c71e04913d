"""The flags of `rag_citations.py`, in four groups: the papers and test questions, the
training answers, the training run, and the program and its scoring."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import add_papers_flag, check_papers

from structune.tasks.citations import AUTHOR_STYLES
from structune.train.config import TrainConfig

MODES = ("plain", "json", "extractive", "ordered")  # how the student decodes (issue 10)


def parse_args(description: str) -> argparse.Namespace:
    """The command line, checked: a usage error for flags that contradict each other or a
    paper missing from `--papers`. `corrected` defaults to `parent`."""
    parser = argparse.ArgumentParser(description=description)
    add_papers_flag(parser, "the folder holding the papers, each as <name>.pdf")
    _paper_flags(parser.add_argument_group("papers and test questions"))
    _answer_flags(parser.add_argument_group("training answers"))
    _training_flags(parser.add_argument_group("training"))
    _scoring_flags(parser.add_argument_group("the program and its scoring"))
    args = parser.parse_args()
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown --modes {sorted(unknown)}: use {', '.join(MODES)}")
    if args.long_lists and args.max_citations < 9:
        parser.error("--long-lists makes answers citing 9 works or more: raise --max-citations")
    if args.surname_pattern and args.authors == "as cited":
        parser.error(
            "--surname-pattern holds authors to one surname: not with --authors 'as cited'"
        )
    if not args.decision_weight > 0:
        parser.error(f"--decision-weight must be a positive number, got {args.decision_weight}")
    if args.aligned_copies and args.decision_weight != 1.0:
        # decision weights find their tokens in the answer's usual tokenization
        parser.error("--decision-weight cannot be combined with --aligned-copies")
    if args.adapter and args.parent:
        parser.error("--adapter evaluates a trained adapter; --parent trains one: give one")
    args.corrected = args.corrected or args.parent
    if args.corrections and not args.corrected:
        parser.error("--corrections decodes a trained adapter: give --corrected or --parent")
    papers = filter(None, (args.train_paper, args.extra_paper, args.test_paper))
    check_papers(parser, args.papers, (f"{paper}.pdf" for paper in papers))
    return args


def _paper_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--train-paper", default="instructgpt")
    group.add_argument("--extra-paper", default="llama2_excerpt", help="'' for none")
    group.add_argument("--test-paper", default="lora")
    group.add_argument("--chunk-size", type=int, default=256, help="of the test chunks")
    group.add_argument("--windows", default="256:128", help="training windows, size:overlap,...")
    group.add_argument("--test", type=int, default=16, help="test questions per test set")


def _answer_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--max-citations", type=int, default=16)
    group.add_argument("--empty-share", type=float, default=0.25)
    group.add_argument(
        "--variants",
        type=int,
        default=2,
        help="variants per citing window with other surnames and years (citation_variants)",
    )
    group.add_argument(
        "--two-authors",
        type=float,
        default=0.3,
        help="share of a variant's 'et al.' citations written as two authors "
        "('Jones & Lee': lora's style, rare in instructgpt)",
    )
    group.add_argument(
        "--bibliography-names",
        action="store_true",
        help="variants also draw surnames from the training paper's bibliography "
        "(bibliography_surnames; the run prints how many)",
    )
    group.add_argument(
        "--made-up-names",
        type=int,
        default=0,
        help="variants also draw from this many made-up surnames (made_up_surnames): "
        "names a student can only copy, never recall",
    )
    group.add_argument(
        "--long-lists",
        type=int,
        default=32,
        help="variants of citing windows made to list 9 to --max-citations works "
        "(long_list_variants)",
    )
    group.add_argument(
        "--nested",
        type=int,
        default=0,
        help="variants of citing windows with a clause-ending citation wrapped in a bracket of "
        "its own: a desc ending in '))' (nested_variants)",
    )
    group.add_argument(
        "--inserted",
        type=int,
        default=0,
        help="variants of windows with one or two citations inserted at sentence ends, "
        "narrative two-author ones among them (inserted_variants)",
    )
    group.add_argument(
        "--yearless",
        type=int,
        default=0,
        help="variants of citing windows with one cited year written as a letter, '(Radford et "
        "al., b)' as lora writes its year-less references, which the teacher leaves out "
        "(yearless_variants)",
    )
    group.add_argument(
        "--narrative",
        type=int,
        default=0,
        help="variants of citing windows with bracketed citations written narratively, "
        "'Smith et al. (2020)', as lora cites nearly half the time (narrative_variants)",
    )
    group.add_argument(
        "--asked-elsewhere",
        type=float,
        default=0.0,
        help="share of training contexts asked another window's question, as a retriever "
        "that misses gives (asked_elsewhere)",
    )
    group.add_argument(
        "--short-windows",
        type=int,
        default=0,
        help="training contexts cut to their first 20-60 words, as short as a splitter's last "
        "chunk of a document (cut_short)",
    )
    group.add_argument(
        "--recovery",
        type=int,
        default=0,
        help="training answers whose list prefix, given with a mistake in it (a work left out, "
        "written twice or moved), is followed by the rest of the teacher's list and the close "
        "(recovery_conversations)",
    )
    group.add_argument(
        "--corrections",
        type=int,
        default=0,
        help="the --corrected adapter answers this many fresh citing contexts (variants of "
        "other windows, with other names and years), and the teacher's answers written on "
        "from its first mistake in each join the training answers (student_corrections)",
    )
    group.add_argument(
        "--fresh-narrative",
        action="store_true",
        help="--corrections' fresh contexts cite as lora does more often than InstructGPT: "
        "half the 'et al.' as two authors, brackets written narratively, citations ending "
        "sentences (fresh_contexts)",
    )
    group.add_argument(
        "--corrected",
        help="the adapter whose answers --corrections corrects (default: --parent; without "
        "--parent the corrected answers join a recipe trained anew, DAgger's aggregate)",
    )


def _training_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--epochs", type=float, default=3.0)
    group.add_argument("--seed", type=int, default=0, help="training seed: LoRA init, batch order")
    group.add_argument("--base", default="smollm2-135m", help="the student's base model")
    group.add_argument("--batch-size", type=int, default=4)
    group.add_argument(
        "--learning-rate",
        type=float,
        default=TrainConfig().learning_rate,
        help="peak learning rate (every recipe in docs/citation-student.md used 1e-3)",
    )
    group.add_argument(
        "--lora-r", type=int, default=16, help="LoRA rank (alpha twice that, as the CLI sets it)"
    )
    group.add_argument(
        "--lora-dropout",
        type=float,
        default=0.0,
        help="dropout on the adapter's input in training: the recipes fit their examples to a "
        "loss near 0.003. It keeps a dropped copy of each layer's input: with it, train with "
        "--gradient-checkpointing (24 GB without, killed for memory at step ~160)",
    )
    group.add_argument(
        "--random-batches",
        action="store_true",
        help="batches drawn at random instead of by similar length (the README's recipes "
        "trained grouped, but for one)",
    )
    group.add_argument(
        "--decision-weight",
        type=float,
        default=1.0,
        help="loss weight of the tokens that open, continue or close the list (research.decisions)",
    )
    group.add_argument(
        "--aligned-copies",
        action="store_true",
        help="answer strings copied from the context tokenized as the context tokenizes them "
        "(research.copies)",
    )
    group.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="less memory for ~8%% more time, the same weights (TrainConfig)",
    )
    group.add_argument("--adapter", help="evaluate this adapter instead of training one")
    group.add_argument(
        "--parent", help="train on from this adapter (its learning-rate schedule starts again)"
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted training run from its checkpoint",
    )


def _scoring_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-tokens",
        type=int,
        default=2048,
        help="answer budget; it must fit the teacher's longest answer (see recall_ceiling)",
    )
    group.add_argument("--no-base", action="store_true", help="leave out the base model's row")
    group.add_argument(
        "--surname-pattern",
        action="store_true",
        help="hold each author to the teacher's surname shape (checked, and under the grammars "
        "enforced)",
    )
    group.add_argument(
        "--desc-first",
        action="store_true",
        help="each citation's desc before its author and year (sourced_program(desc_first=True))",
    )
    group.add_argument(
        "--authors",
        choices=AUTHOR_STYLES,
        default="first",
        help="the teacher's author: the first author's surname ('Li'), or the authors as "
        "cited ('Li & Liang', 'Ouyang et al.'); scored alike (author_key)",
    )
    group.add_argument(
        "--probes-only",
        action="store_true",
        help="print the student's open and close probabilities and stop (minutes, not an hour)",
    )
    group.add_argument(
        "--modes",
        default=",".join(MODES),
        help="the student's decoding modes to score, comma-separated",
    )
    group.add_argument("--json", type=Path, help="write the figures here")
