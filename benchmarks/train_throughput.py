"""Training throughput on this machine, next to the raw forward+backward throughput of
the same model at the same sequence length, in one run.

    .venv/bin/python benchmarks/train_throughput.py [--steps 6]

Rows:
- raw forward+backward: LoRA model, a full batch of the album examples (same lengths the
  trainer sees), transformers' own loss over every position, no optimizer step;
- structune trainer: `finetune()` itself for --steps steps (padding to each batch's longest,
  answer-only loss, AdamW), counted from its manifest (tokens / seconds).
The gap between the two is the per-step overhead the trainer owns; a ratio above 1
means the trainer's answer-only loss saves more than its overhead costs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from structune import TrainConfig, finetune
from structune.models.loading import load_model
from structune.models.precision import fast_dtype
from structune.tasks.albums import curated_conversations
from structune.train.data import collate, tokenize_conversation
from structune.train.lora import with_lora


def album_conversations() -> list[list[dict[str, str]]]:
    return curated_conversations(40)


def raw_forward_backward(
    conversations, *, batch_size: int, steps: int, bf16: bool, max_length: int = 1024
) -> float:
    model, tokenizer = load_model("smollm2-135m")
    model = with_lora(model, TrainConfig())
    model.train()
    examples = [tokenize_conversation(tokenizer, c, max_length=max_length) for c in conversations]
    rates = []
    for step in range(steps + 1):  # the first step warms up and is not counted
        start = (step * batch_size) % len(examples)
        batch = collate(examples[start : start + batch_size], pad_token_id=tokenizer.pad_token_id)
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if step:
            rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - began))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    bf16 = fast_dtype() == "bfloat16"
    conversations = album_conversations()
    print(f"threads={torch.get_num_threads()} bf16={bf16} batch={args.batch_size}")

    raw = raw_forward_backward(
        conversations, batch_size=args.batch_size, steps=args.steps, bf16=bf16
    )
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size)
    manifest = finetune(conversations, config=config, task="bench", progress=False)
    trainer = manifest.tokens_trained / manifest.train_seconds

    print(f"{'path':<44} {'tokens/s':>9}")
    print(f"{'raw forward+backward (LoRA, full-vocab loss)':<44} {raw:>9.1f}")
    print(f"{'structune trainer (steps incl. optimizer)':<44} {trainer:>9.1f}")
    print(f"trainer / raw = {trainer / raw:.2f}")


if __name__ == "__main__":
    main()
