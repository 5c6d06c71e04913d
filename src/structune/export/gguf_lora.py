"""A PEFT LoRA adapter → a GGUF LoRA adapter that llama.cpp applies over the base GGUF.

llama.cpp (and llama-cpp-python's `Llama(..., lora_path=...)`, Ollama's `ADAPTER`) loads
LoRA adapters in GGUF: per adapted weight a `.lora_a` (r x in) and `.lora_b` (out x r)
tensor under llama.cpp's tensor names, plus `adapter.lora.alpha`. Llama-family q/k
projections are stored row-permuted in GGUF (llama.cpp's rotary layout), so `lora_b` of
q and k gets the same permutation the converter applies to those weights; qwen2 and gemma3
weights are stored as transformers holds them (llama.cpp's convert_hf_to_gguf.py permutes
only for llama).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from structune.adapters import load_manifest
from structune.errors import UserError
from structune.fileio import check_writable


def export_gguf_lora(adapter_id: str, out: str | Path) -> Path:
    """Write adapter `adapter_id` as a GGUF LoRA file at `out`; return its path."""
    import gguf

    manifest = load_manifest(adapter_id)
    peft_config = json.loads((manifest.path / "adapter_config.json").read_text())
    architecture, base_config = _architecture(adapter_id)  # refuses before writing anything
    pairs = list(_lora_pairs(adapter_id, architecture, base_config))
    out = check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out, architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(peft_config["lora_alpha"]))
    writer.add_name(f"structune adapter {adapter_id}")
    for name, lora_a, lora_b in pairs:
        writer.add_tensor(f"{name}.lora_a", lora_a)
        writer.add_tensor(f"{name}.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def lora_pairs(adapter_id: str) -> Iterator[tuple[str, Any, Any]]:
    """(llama.cpp weight name, A, B) per adapted weight, fp32, B in the GGUF's row order."""
    return _lora_pairs(adapter_id, *_architecture(adapter_id))


def _lora_pairs(
    adapter_id: str, architecture: str, base_config: dict[str, Any]
) -> Iterator[tuple[str, Any, Any]]:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    n_head, n_kv = base_config["num_attention_heads"], base_config["num_key_value_heads"]
    permuted = architecture == "llama"
    names = gguf.get_tensor_name_map(
        _gguf_architectures()[architecture], base_config["num_hidden_layers"]
    )
    weights = load_file(load_manifest(adapter_id).path / "adapter_model.safetensors")
    for key in sorted(k for k in weights if ".lora_A." in k):
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
        module = key.removeprefix("base_model.model.").split(".lora_")[0]
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise UserError(f"no llama.cpp tensor name for {module}; cannot export to GGUF")
        lora_a = weights[key].astype(np.float32)
        lora_b = weights[key.replace(".lora_A.", ".lora_B.")].astype(np.float32)
        if permuted and module.endswith("q_proj"):
            lora_b = _permute(lora_b, n_head, n_head)
        elif permuted and module.endswith("k_proj"):
            lora_b = _permute(lora_b, n_head, n_kv)
        yield target, lora_a, lora_b


def _architecture(adapter_id: str) -> tuple[str, dict[str, Any]]:
    """The base's llama.cpp architecture name and its transformers config; refuses a base
    whose tensor names this export does not know."""
    manifest = load_manifest(adapter_id)
    config = _base_config(manifest.base_model)
    model_type = str(config.get("model_type"))
    architecture = _MODEL_TYPES.get(model_type)
    if architecture is None:
        raise UserError(
            f"GGUF export supports {', '.join(sorted(_MODEL_TYPES))} bases; "
            f"{manifest.base_model} is {model_type!r}: export `--format merged` instead"
        )
    return architecture, config


# transformers model_type → llama.cpp architecture; gguf's table names each one's tensors
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma3": "gemma3", "gemma3_text": "gemma3"}


def _gguf_architectures() -> dict[str, Any]:
    import gguf

    return {name: gguf.MODEL_ARCH[name.upper()] for name in set(_MODEL_TYPES.values())}


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """llama.cpp's rotary row order for q/k (as in its convert_hf_to_gguf.py)."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _base_config(base: str) -> dict[str, Any]:
    from structune.models.loading import resolve_model

    config: dict[str, Any] = json.loads((Path(resolve_model(base)) / "config.json").read_text())
    return config
