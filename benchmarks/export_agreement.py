"""A tuned adapter in transformers vs its GGUF LoRA export in llama.cpp, side by side.

    .venv/bin/python benchmarks/export_agreement.py ADAPTER_ID [--prompts 20]

Greedy answers on held-out album prompts from (a) `LocalLLM` with the adapter merged, fp32,
batched and (b) llama.cpp running the bundled Q4_1 base GGUF with the exported GGUF LoRA.
Prints schema-valid counts, whole-answer agreement, export time and tokens/s of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from structune.evaluate.compare import compare
from structune.export.gguf_lora import export_gguf_lora
from structune.llms.llama_cpp import LlamaCppLLM
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_gguf_path
from structune.tasks.albums import album_program, heldout_movies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=384)
    args = parser.parse_args()

    started = time.perf_counter()
    path = export_gguf_lora(args.adapter, Path(tempfile.mkdtemp()) / "adapter.gguf")
    export_s = time.perf_counter() - started

    gguf = LlamaCppLLM(builtin_gguf_path("smollm2-135m"), n_threads=2, lora_path=path)
    models = {
        "transformers + adapter": LocalLLM.load(adapter=args.adapter),
        "llama.cpp + GGUF LoRA": gguf,
    }
    inputs = [{"movie_name": m} for m in heldout_movies()[: args.prompts]]
    result = compare(album_program, models, inputs, max_tokens=args.max_tokens)
    hf, cpp = result.answers["transformers + adapter"], result.answers["llama.cpp + GGUF LoRA"]
    same = sum(a.text == b.text for a, b in zip(hf, cpp, strict=True))
    print(f"export to GGUF LoRA: {export_s:.2f} s ({path.stat().st_size / 1e6:.1f} MB)")
    print(result.table())
    print(f"identical answers: {same}/{len(inputs)}")


if __name__ == "__main__":
    main()
