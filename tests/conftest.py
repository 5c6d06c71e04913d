"""Shared fixtures.

Every test session gets its own STRUCTUNE_HOME, so tests never touch a user's datasets
or adapters. The dequantized base model is the one slow thing to build (~20 s); it is
kept between sessions in .pytest_cache/structune-models and linked into each home.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = REPO / ".pytest_cache" / "structune-models"


@pytest.fixture(scope="session", autouse=True)
def structune_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("structune-home")
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(MODEL_CACHE, target_is_directory=True)
    os.environ["STRUCTUNE_HOME"] = str(home)
    os.environ.pop("STRUCTUNE_DB", None)
    return home


@pytest.fixture(scope="session")
def smollm2_dir(structune_home: Path) -> Path:
    """The bundled SmolLM2-135M-Instruct as a transformers directory."""
    from structune.models.loading import resolve_model

    return Path(resolve_model("smollm2-135m"))


# A tiny decoder's shape: 2 layers, 64 wide; each architecture's config takes these.
TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def save_tiny_model(out: Path, model_class: Any, config: Any, tokenizer: Any) -> Path:
    """Save a random-initialised `model_class(config)` (seed 0) and `tokenizer` in `out`."""
    import torch

    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide Llama with SmolLM2's tokenizer and chat template: trains in
    well under a second a step, so unit tests exercise the real training code."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return save_tiny_model(
        tmp_path_factory.mktemp("tiny-llama"), LlamaForCausalLM, config, tokenizer
    )


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> Any:
    """SmolLM2's tokenizer, as the tiny model loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def test_paper_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's two-column test paper (`tests/papers.py`), written once per session."""
    from papers import FILE_NAME, write_test_paper

    return write_test_paper(tmp_path_factory.mktemp("papers") / FILE_NAME)
