"""A tuned adapter in transformers vs its GGUF exports in llama.cpp, side by side.

    .venv/bin/python benchmarks/export_agreement.py ADAPTER_ID [--prompts 20]

Greedy answers on held-out album prompts from (a) `LocalLLM` with the adapter, fp32,
batched — the model structune trains and serves; (b) llama.cpp running the bundled Q4_1
base GGUF with the exported GGUF LoRA; (c) llama.cpp running the adapter merged into one
GGUF, per tensor type. Prints export times and sizes, the comparison table (schema-valid
counts, tokens/s) and how many answers are identical to (a) to the letter.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from structune.evaluate.compare import compare
from structune.export.gguf_lora import export_gguf_lora
from structune.export.gguf_merged import export_gguf_merged
from structune.llms.base import LLM
from structune.llms.llama_cpp import LlamaCppLLM
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_gguf_path
from structune.tasks.albums import album_program, heldout_movies

REFERENCE = "transformers + adapter"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--types", default="f32,f16,q8_0", help="merged GGUF tensor types")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    models: dict[str, LLM] = {REFERENCE: LocalLLM.load(adapter=args.adapter)}

    lora = timed_export("GGUF LoRA", lambda: export_gguf_lora(args.adapter, folder / "lora.gguf"))
    base = builtin_gguf_path("smollm2-135m")
    models["llama.cpp Q4_1 base + GGUF LoRA"] = LlamaCppLLM(base, n_threads=2, lora_path=lora)
    for kind in args.types.split(","):
        out = folder / f"merged-{kind}.gguf"
        merged = timed_export(
            f"merged GGUF {kind}",
            partial(export_gguf_merged, args.adapter, out, tensor_type=kind, progress=False),
        )
        models[f"llama.cpp merged GGUF {kind.upper()}"] = LlamaCppLLM(merged, n_threads=2)

    inputs = [{"movie_name": m} for m in heldout_movies()[: args.prompts]]
    result = compare(album_program, models, inputs, max_tokens=args.max_tokens)
    print(result.table())
    reference = result.answers[REFERENCE]
    for name, answers in result.answers.items():
        if name != REFERENCE:
            same = sum(a.text == b.text for a, b in zip(reference, answers, strict=True))
            print(f"identical to {REFERENCE}: {name}: {same}/{len(inputs)}")


def timed_export(label: str, export: Callable[[], Path]) -> Path:
    started = time.perf_counter()
    path = export()
    seconds = time.perf_counter() - started
    print(f"export {label}: {seconds:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
    return path


if __name__ == "__main__":
    main()
