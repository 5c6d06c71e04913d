"""Constrained vs plain decoding, transformers batch 1 vs batched vs llama.cpp, in one run.

    .venv/bin/python benchmarks/constrained_decoding.py [--model ADAPTER_ID] [--prompts 8]

Same model, same album prompts (held-out movies), greedy. Prints, per path: answers/s,
generated tokens/s, valid answers, and for constrained rows the share of decode time spent
computing and applying grammar masks (the per-token overhead of constraining). llama.cpp
(`LlamaCppLLM`) runs the bundled GGUF (Q4_1) single-stream, plain and with its own
JSON-schema grammar; only for the base model (this benchmark does not export adapters to
GGUF; `structune export-adapter` does).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from structune.constrain.grammar import compile_schema
from structune.constrain.processor import GrammarLogitsProcessor
from structune.evaluate.compare import compare
from structune.llms.base import Constrained
from structune.llms.llama_cpp import LlamaCppLLM
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_gguf_path
from structune.tasks.albums import album_program, heldout_movies


class TimedProcessor:
    """Wraps the grammar processor to add up the time it takes."""

    def __init__(self, inner: GrammarLogitsProcessor):
        self.inner = inner
        self.seconds = 0.0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        started = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - started
        return out


def mask_share(llm: LocalLLM, conversations: list, max_tokens: int) -> float:
    """Fraction of constrained decode time spent in the grammar processor (whole batch)."""
    import torch
    from transformers import LogitsProcessorList

    from structune.models.chat import render_chat

    grammar = compile_schema(album_program.json_schema, llm.tokenizer)
    prompts = [render_chat(llm.tokenizer, m, add_generation_prompt=True) for m in conversations]
    enc = llm.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    timed = TimedProcessor(GrammarLogitsProcessor(grammar, batch_size=len(prompts)))
    started = time.perf_counter()
    with torch.inference_mode():
        llm.model.generate(
            **enc,
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=llm.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([timed]),
        )
    return timed.seconds / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a built-in base or adapter id")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    inputs = [{"movie_name": m} for m in heldout_movies()[: args.prompts]]
    conversations = [album_program.messages(i) for i in inputs]

    def load(batch_size: int) -> LocalLLM:
        if args.model == "smollm2-135m":
            return LocalLLM.load(args.model, batch_size=batch_size)
        return LocalLLM.load(adapter=args.model, batch_size=batch_size)

    single, batched = load(1), load(args.prompts)
    schema = album_program.json_schema
    models = {
        "transformers batch 1": single,
        "transformers batch 1 + grammar": Constrained(single, schema),
        f"transformers batch {args.prompts}": batched,
        f"transformers batch {args.prompts} + grammar": Constrained(batched, schema),
    }
    if args.model == "smollm2-135m":
        gguf = LlamaCppLLM(builtin_gguf_path("smollm2-135m"), n_threads=2)
        models["llama.cpp Q4_1 batch 1"] = gguf
        models["llama.cpp Q4_1 batch 1 + grammar"] = Constrained(gguf, schema)
    result = compare(album_program, models, inputs, max_tokens=args.max_tokens)
    share_1 = mask_share(single, conversations[:1], args.max_tokens)
    share_n = mask_share(batched, conversations, args.max_tokens)

    print(f"model={args.model} prompts={args.prompts} max_tokens={args.max_tokens}")
    print(f"{'path':<40} {'answers/s':>9} {'tokens/s':>9} {'valid':>7} {'mask share':>10}")
    for score in result.scores:
        share = ""
        if score.model.startswith("transformers") and score.model.endswith("grammar"):
            share = f"{100 * (share_1 if 'batch 1 ' in score.model else share_n):.1f}%"
        print(
            f"{score.model:<40} {score.answers / score.wall_s:>9.3f} "
            f"{score.tokens_per_s:>9.1f} {score.valid:>4}/{score.answers:<2} {share:>10}"
        )


if __name__ == "__main__":
    main()
