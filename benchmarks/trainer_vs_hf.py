"""structune's trainer against a plain transformers `Trainer` + peft, the same LoRA run side
by side in one process: wall time, final answer loss, trained tokens/s and MFU.

    .venv/bin/python benchmarks/trainer_vs_hf.py --papers DIR [--datasets albums,citations]
        [--steps 10] [--batch-size 4] [--rounds 2] [--seed 0] [--precision auto|fp32]

Both train SmolLM2-135M-Instruct on this CPU with the same LoRA (r=16, alpha 32,
all linear layers, no dropout), fused AdamW (no weight decay) at the same peak learning
rate with linear warm-up over a tenth of the steps and linear decay, gradients clipped to a
global norm of 1.0, for the same number of steps of
the same batch size over the same 40 examples, from the same seed (LoRA init and data
order). Two datasets, the
notebook's two tasks, each measured on its own:

- albums: 40 curated album answers, 338-394 tokens each, 28% of them answer: the case
  where grouping by length and an answer-only loss have least to win.
- citations: 40 answers of the citation program by the offline teacher over 256-token
  windows of instructgpt.pdf in `--papers DIR` (e.g. `--papers ../shared/data/papers`, where
  this workplace keeps it; not needed for `--datasets albums`), 30 that cite, 10 that cite
  nothing (the citation benchmark's training data), 541-1,361 tokens each, 77% of them prompt.

The baseline is what a plain user writes: the examples tokenized exactly as structune
tokenizes them, prompt labels masked to -100 so that both learn the answer only (the
objective is the same: mean loss over answer tokens); `DataCollatorForSeq2Seq` padding
each batch to its longest example (transformers' collator for labels masked in advance;
`DataCollatorForLanguageModeling` would put the loss back on the prompt); the default
random sampler (no length grouping); the model's own loss, which projects every position
onto the 49k-token vocabulary; the rest left at `TrainingArguments` defaults (fused AdamW,
gradient clipping at 1.0). The two see the examples in different orders.

structune runs twice: at its default, batches drawn at random as the Trainer draws them,
and with `group_by_length=True`, each batch cut from examples of similar length: less
padding and a shorter loop, but batches of one kind (four empty answers, four long lists)
and, on these 10 steps, a higher loss.

Each trainer runs `--rounds` times, their order reversed every other round, round r (from
1) from seed `--seed` + r - 1. The table shows each one's fastest loop (this 2-core machine
is shared, and one run each measured 1.33x under contention and 1.01x on an idle machine)
and its final loss averaged over the rounds, with their range: on 10 steps of the citation
set the seed alone moved structune's loss (grouped) between 0.113 and 0.130, so one seed cannot tell
a trainer's loss from its luck.

- wall: the whole call, loading the model through saving the adapter; loop: the training
  steps alone (the manifest's `train_seconds`, the Trainer's `train_runtime`).
- final answer loss: after training, each model's mean answer-token loss over all 40
  examples, computed by the same function (`structune.train.lora.answer_loss`); the mean
  over the rounds (seeds), their lowest-highest in brackets.
- tokens/s: real (non-padding) tokens of the batches trained on, per second of loop
  (the manifest's `tokens_trained`; the Trainer's own `num_input_tokens_seen`).
- MFU: 6 x N x tokens/s / peak, with N all 134.5 M parameters of the model and the peak
  the best matmul rate measured in this run, in the precision the row computes in (see
  `model_flops_per_token`).
- raw forward+backward: `train_throughput.raw_forward_backward`, a reference row, in
  structune's precision.

Precision (`--precision`): `auto` runs each trainer at its own default, as a user gets
it: structune trains under bf16 autocast where the CPU computes bf16 natively
(AVX512-BF16 or AMX; fp32 elsewhere, `structune.models.precision`), the Trainer in fp32
(`TrainingArguments(bf16=False)`). Where that makes structune bf16, a further row trains the
Trainer with `bf16=True`, so the table shows what the precision buys apart from the rest.
`fp32` runs both in fp32. MFU counts against the peak matmul rate of the precision a row
computes in, both measured in the run.
"""

from __future__ import annotations

import argparse
import functools
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from common import add_papers_flag, check_papers, paper_inputs
from matmul_dtype import gflops
from train_throughput import album_conversations, raw_forward_backward

from structune import TrainConfig, finetune
from structune.llms.callable import CallableLLM
from structune.models.loading import load_model
from structune.models.precision import fast_dtype
from structune.record import DatasetStore, record
from structune.tasks.citations import citation_program, citation_teacher
from structune.train.data import collate, tokenize_conversation
from structune.train.lora import answer_loss, answer_token_count, with_lora

BASE = "smollm2-135m"
MAX_LENGTH = 2048  # every example of both datasets fits
CITATION_PAPER = "instructgpt.pdf"  # what the citations dataset reads from --papers


def citation_conversations(
    papers: Path, n: int = 40, citing: int = 30
) -> list[list[dict[str, str]]]:
    """`n` teacher answers over windows of instructgpt.pdf in `papers`, `citing` of them
    with 1-8 citations."""
    # the windows of the citation benchmark's recipe, their index shared with it
    found = paper_inputs(papers, CITATION_PAPER.removesuffix(".pdf"), 256, 128, retrieve=False)
    teacher = CallableLLM(citation_teacher, model_id="rules:citations")
    with DatasetStore(":memory:") as store:
        record(citation_program, teacher, found.inputs, store=store, progress=False)
        answered = store.examples(valid=True)
    cites = [e for e in answered if 0 < len(e.parsed["citations"]) <= 8]
    empty = [e for e in answered if not e.parsed["citations"]]
    rng = random.Random(0)
    chosen = rng.sample(cites, citing) + rng.sample(empty, n - citing)
    rng.shuffle(chosen)
    return [e.training_conversation() for e in chosen]


DATASETS = {  # name → its conversations, given the --papers folder
    "albums": lambda papers: album_conversations(),
    "citations": citation_conversations,
}


def peak_matmul_flops(*, bf16: bool, size: int = 4096, repeats: int = 3) -> float:
    """The machine's fp32 (or bf16) matmul FLOP/s: a square matmul big enough to run at
    full speed."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return gflops(a, b, repeats) * 1e9


def model_flops_per_token(peft_model: Any) -> int:
    """6 N: forward 2 N plus backward 4 N FLOPs per token, the usual MFU convention.

    N counts every parameter the forward pass multiplies by: the 134.5 M of the base model,
    frozen ones included, as MFU counts them for full fine-tuning, plus the 4.9 M of the
    LoRA matrices (the tied embedding counts once, as the output projection). The same N
    for both trainers, so MFU compares like tokens/s. It measures useful work, not work
    done: LoRA never computes the frozen weights' gradients (nearer 4 N really), structune
    projects only answer positions onto the vocabulary, and attention's sequence-length
    term (small at ~300 tokens) is left out.
    """
    return 6 * sum(p.numel() for p in peft_model.parameters())


@dataclass
class Run:
    """One trainer's run: the trained model and what it took."""

    model: Any  # the PeftModel, base and trained adapter
    tokenizer: Any
    wall: float  # seconds, loading the model through saving the adapter
    loop: float  # seconds of training steps
    tokens: int  # real tokens of the batches trained on
    bf16: bool  # trained under bf16 autocast
    losses: list[float] = field(default_factory=list)  # final mean answer loss, every round

    @property
    def loss(self) -> float:
        return sum(self.losses) / len(self.losses)


def mean_answer_loss(model: Any, examples: list[Any], *, pad_token_id: int) -> float:
    """Mean answer-token loss of `model` over `examples`, in length-sorted batches of 8."""
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    total = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ordered), 8):
            batch = collate(ordered[start : start + 8], pad_token_id=pad_token_id)
            total += float(answer_loss(model, batch, reduction="sum"))
    return total / sum(map(answer_token_count, examples))


def train_structune(
    conversations, *, steps: int, batch_size: int, bf16: bool, seed: int, grouped: bool = False
) -> Run:
    from peft import PeftModel

    config = TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        max_length=MAX_LENGTH,
        bf16=bf16,
        seed=seed,
        checkpoint_every=0,
        group_by_length=grouped,
    )
    began = time.perf_counter()
    manifest = finetune(conversations, base=BASE, config=config, task="bench", progress=False)
    wall = time.perf_counter() - began
    model, tokenizer = load_model(BASE, dtype="float32")
    trained = PeftModel.from_pretrained(model, str(manifest.path))
    return Run(trained, tokenizer, wall, manifest.train_seconds, manifest.tokens_trained, bf16)


def train_transformers(conversations, *, steps: int, batch_size: int, bf16: bool, seed: int) -> Run:
    """What a plain user writes with transformers' Trainer and peft (see the module doc)."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    defaults = TrainConfig()
    began = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer = load_model(BASE, dtype="float32")
    examples = [tokenize_conversation(tokenizer, c, max_length=MAX_LENGTH) for c in conversations]
    dataset = [
        {"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
        for e in examples
    ]
    model = with_lora(model, defaults)  # the very LoRA structune's trainer adds
    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest")  # labels padded with -100
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=defaults.learning_rate,
            warmup_steps=defaults.warmup_ratio,  # a float below 1 is a ratio of the steps
            lr_scheduler_type="linear",
            weight_decay=0.0,
            seed=seed,
            use_cpu=True,
            bf16=bf16,  # False is the default
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            include_num_input_tokens_seen="non_padding",  # counted from the attention mask
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        result = trainer.train()
        trainer.save_model(out)
    wall = time.perf_counter() - began
    tokens = trainer.state.num_input_tokens_seen
    return Run(model, tokenizer, wall, result.metrics["train_runtime"], tokens, bf16)


def loss_cell(losses: list[float]) -> str:
    mean = f"{sum(losses) / len(losses):.3f}"
    return mean if len(losses) == 1 else f"{mean} ({min(losses):.3f}-{max(losses):.3f})"


def markdown_table(
    runs: dict[str, Run], *, raw_rate: float, peaks: dict[bool, float], flops_per_token: int
) -> str:
    """The runs side by side; MFU against the peak of the precision each computes in."""

    def mfu(tokens_per_second: float, bf16: bool) -> str:
        return f"{100 * flops_per_token * tokens_per_second / peaks[bf16]:.0f}%"

    lines = [
        "| trainer | wall s | loop s | tokens | tokens/s | MFU (6N) | final answer loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        rate = r.tokens / r.loop
        lines.append(
            f"| {name} | {r.wall:.0f} | {r.loop:.0f} | {r.tokens} | {rate:.0f} "
            f"| {mfu(rate, r.bf16)} | {loss_cell(r.losses)} |"
        )
    raw_mfu = mfu(raw_rate, runs[OURS].bf16)
    lines.append(f"| raw forward+backward (reference) | | | | {raw_rate:.0f} | {raw_mfu} | |")
    return "\n".join(lines)


OURS, THEIRS = "structune", "transformers Trainer + peft"
GROUPED = f"{OURS}, group_by_length=True"


def compare_trainers(
    conversations,
    *,
    steps: int,
    batch_size: int,
    rounds: int,
    seed: int,
    raw_steps: int,
    bf16: bool,
):
    """Train with each trainer `rounds` times, round r (from 0) from `seed` + r; the fastest run of
    each with every round's loss, the raw reference's tokens/s and the per-round loop
    ratios (the default Trainer's / ours). `bf16`:
    structune's precision; the Trainer runs at its default, fp32, and also with
    `bf16=True` when structune does."""
    trainers = {
        OURS: functools.partial(train_structune, bf16=bf16),
        GROUPED: functools.partial(train_structune, bf16=bf16, grouped=True),
        THEIRS: functools.partial(train_transformers, bf16=False),
    }
    if bf16:
        trainers[f"{THEIRS}, bf16=True"] = functools.partial(train_transformers, bf16=True)
    best: dict[str, Run] = {}
    losses: dict[str, list[float]] = {name: [] for name in trainers}
    examples = None  # tokenized once, with the first run's tokenizer: both tokenize alike
    ratios = []
    for round_ in range(rounds):
        # Reverse the order every other round: on a shared machine, contention falls on all.
        order = list(trainers) if round_ % 2 == 0 else list(reversed(trainers))
        this_round = {}
        for name in order:
            run = trainers[name](
                conversations, steps=steps, batch_size=batch_size, seed=seed + round_
            )
            tokenizer = run.tokenizer
            if examples is None:
                examples = [
                    tokenize_conversation(tokenizer, c, max_length=MAX_LENGTH)
                    for c in conversations
                ]
            losses[name].append(
                mean_answer_loss(run.model, examples, pad_token_id=tokenizer.pad_token_id)
            )
            this_round[name] = run
            if name not in best or run.loop < best[name].loop:
                best[name] = run
        ratios.append(this_round[THEIRS].loop / this_round[OURS].loop)
        loops = ", ".join(f"{name} {run.loop:.0f} s" for name, run in this_round.items())
        print(f"round {round_ + 1} (seed {seed + round_}): loop {loops}")
    raw_rate = raw_forward_backward(
        conversations, batch_size=batch_size, steps=raw_steps, bf16=bf16, max_length=MAX_LENGTH
    )
    for name, run in best.items():
        run.losses = losses[name]
    return {name: best[name] for name in trainers}, raw_rate, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", default="albums,citations", help=f"comma-separated, of {', '.join(DATASETS)}"
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="optimizer steps of each (10: one epoch)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--raw-steps", type=int, default=3, help="steps of the raw reference")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="train each this many times, order reversed every other round; the best loop counts",
    )
    parser.add_argument(
        "--seed", type=int, default=TrainConfig().seed, help="of round 1; round r: seed + r - 1"
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32"],
        default="auto",
        help="auto: each trainer's default (structune bf16 where native, the Trainer fp32)",
    )
    add_papers_flag(
        parser, f"a folder holding {CITATION_PAPER}, for the citations dataset", required=False
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    datasets = args.datasets.split(",")
    if unknown := set(datasets) - set(DATASETS):
        parser.error(f"unknown datasets {sorted(unknown)}; choose from {', '.join(DATASETS)}")
    if "citations" in datasets:
        if args.papers is None:
            parser.error(
                f"the citations dataset needs --papers DIR (a folder holding {CITATION_PAPER}); "
                "or pass --datasets albums"
            )
        check_papers(parser, args.papers, [CITATION_PAPER])
    bf16 = args.precision == "auto" and fast_dtype() == "bfloat16"
    peaks = {False: peak_matmul_flops(bf16=False), True: peak_matmul_flops(bf16=True)}
    print(
        f"threads={torch.get_num_threads()} structune in {'bf16' if bf16 else 'fp32'} "
        f"steps={args.steps} batch={args.batch_size}"
    )

    results = {}
    for dataset in datasets:
        conversations = DATASETS[dataset](args.papers)
        print(f"\n{dataset}: {len(conversations)} examples")
        results[dataset] = compare_trainers(
            conversations,
            steps=args.steps,
            batch_size=args.batch_size,
            rounds=args.rounds,
            seed=args.seed,
            raw_steps=args.raw_steps,
            bf16=bf16,
        )
    for dtype in peaks:  # before and after: the best is the least contended
        peaks[dtype] = max(peaks[dtype], peak_matmul_flops(bf16=dtype))

    for dataset, (runs, raw_rate, ratios) in results.items():
        ours, theirs = runs[OURS], runs[THEIRS]
        flops_per_token = model_flops_per_token(ours.model)
        print(
            f"\n{dataset}: peak matmul fp32 {peaks[False] / 1e9:.0f}, bf16 "
            f"{peaks[True] / 1e9:.0f} GFLOP/s; N = {flops_per_token / 6e6:.1f} M\n"
        )
        table = markdown_table(
            runs, raw_rate=raw_rate, peaks=peaks, flops_per_token=flops_per_token
        )
        print(table)
        print(
            f"\n{dataset}: structune is {theirs.wall / ours.wall:.2f}x faster end to end, "
            f"{theirs.loop / ours.loop:.2f}x on the training loop (best of {args.rounds}; per "
            f"round {', '.join(f'{r:.2f}x' for r in ratios)}); final answer loss (mean) "
            f"{ours.loss:.3f} vs {theirs.loss:.3f}"
        )
        grouped = runs[GROUPED]
        print(
            f"{dataset}: structune grouped by length is {theirs.loop / grouped.loop:.2f}x faster "
            f"on the loop; final answer loss {grouped.loss:.3f}"
        )
        if (same := runs.get(f"{THEIRS}, bf16=True")) is not None:
            print(
                f"{dataset}: against the Trainer in bf16 too, {same.loop / ours.loop:.2f}x on "
                f"the loop; final answer loss {ours.loss:.3f} vs {same.loss:.3f}"
            )


if __name__ == "__main__":
    main()
