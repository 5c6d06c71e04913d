"""What the decoding precision does to greedy answers: one album adapter answering the demo's
held-out movies in fp32, in bf16 (what `LocalLLM.load` picks on a CPU with native bf16),
and in bf16 with the logits computed in fp32, in one run; with how many answers each row
gives exactly as fp32 does.

    .venv/bin/python benchmarks/decode_precision.py [--adapter ID | --seed N] [--movies 20]

Without `--adapter`, trains one first with the demo's recipe (`ALBUM_TRAINING`, 40 curated
albums, training seed `--seed`). bf16 pays only on a CPU with AVX512-BF16 or AMX; elsewhere
PyTorch emulates it and the bf16 rows are slow (see structune.models.precision).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from structune import finetune
from structune.evaluate.compare import compare
from structune.llms.local import LocalLLM
from structune.models.precision import DType, cpu_has_fast_bf16
from structune.tasks.albums import (
    ALBUM_TRAINING,
    album_program,
    curated_conversations,
    heldout_movies,
)


def with_fp32_logits(llm: LocalLLM) -> LocalLLM:
    """`llm` (in bf16) with an fp32 copy of its output layer, untied from the embeddings,
    fed the final hidden state upcast: the logits in fp32, the body in bf16."""
    head = llm.model.get_output_embeddings()
    fp32 = torch.nn.Linear(head.in_features, head.out_features, bias=False)
    fp32.weight = torch.nn.Parameter(head.weight.detach().float(), requires_grad=False)
    fp32.register_forward_pre_hook(lambda _, args: (args[0].float(),))
    llm.model.set_output_embeddings(fp32)
    return llm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", help="an album adapter id; default: train one")
    parser.add_argument("--seed", type=int, default=0, help="the training seed, without --adapter")
    parser.add_argument("--movies", type=int, default=20)
    args = parser.parse_args()
    adapter = args.adapter or (
        finetune(
            curated_conversations(40),
            config=replace(ALBUM_TRAINING, seed=args.seed),
            task=album_program.name,
        ).id
    )

    def load(dtype: DType) -> LocalLLM:
        return LocalLLM.load(adapter=adapter, dtype=dtype, batch_size=args.movies)

    models = {
        "fp32": load("float32"),
        "bf16": load("bfloat16"),
        "bf16, fp32 logits": with_fp32_logits(load("bfloat16")),
    }
    inputs = [{"movie_name": m} for m in heldout_movies()[: args.movies]]
    print(f"adapter={adapter} movies={args.movies} native bf16={cpu_has_fast_bf16()}")
    result = compare(album_program, models, inputs, max_tokens=192)
    print(result.table())
    reference = [a.text for a in result.answers["fp32"]]
    for name in models:
        same = sum(a.text == r for a, r in zip(result.answers[name], reference, strict=True))
        print(f"{name:<20} answers identical to fp32's: {same}/{len(reference)}")


if __name__ == "__main__":
    main()
