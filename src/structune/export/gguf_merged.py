"""An adapter merged into its base GGUF → one standalone GGUF that llama.cpp and Ollama load.

The base GGUF is rewritten rather than converted from transformers weights: its metadata
(tokenizer, chat template, special tokens, rope settings) is copied as it is, so llama.cpp
reads the same model it already runs, and only the weights change. Each adapted weight
becomes W + scale · B·A (q/k rows in llama.cpp's rotary order, as in the GGUF LoRA).

The default tensor type is F32: the transformers model that is trained and served here is
the base GGUF dequantized to fp32, so an F32 export holds exactly its weights and greedy
answers agree with it (benchmarks/export_agreement.py). F16 halves the file; Q8_0 quarters
it, at the cost of agreement. One-dimensional tensors (norms) stay F32, as llama.cpp's
converter writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from structune.adapters import load_manifest
from structune.errors import UserError
from structune.export.gguf_lora import lora_pairs
from structune.fileio import check_writable

TensorType = Literal["f32", "f16", "q8_0"]


def export_gguf_merged(
    adapter_id: str, out: str | Path, *, tensor_type: TensorType = "f32", progress: bool = True
) -> Path:
    """Write adapter `adapter_id` merged into its base as the GGUF file `out`; return its path.

    The file is written beside `out` and renamed into place: an interrupted export never
    leaves a partial `.gguf` that llama.cpp would try to load.
    """
    import gguf
    import numpy as np
    from tqdm import tqdm

    manifest = load_manifest(adapter_id)
    reader = gguf.GGUFReader(_base_gguf(manifest.base_model))
    deltas = _lora_deltas(adapter_id)
    missing = sorted(set(deltas) - {t.name for t in reader.tensors})
    if missing:
        raise UserError(f"the base GGUF has no tensors for {missing[:3]}; cannot merge")
    type_name, file_type = _GGUF_TYPES[tensor_type]
    qtype = gguf.GGMLQuantizationType[type_name]

    def merged(tensor: Any) -> Any:
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weights = weights.reshape([int(n) for n in reversed(tensor.shape)])
        if tensor.name in deltas:
            weights = weights + deltas.pop(tensor.name)
        if weights.ndim == 1:  # norms: tiny, and llama.cpp wants them F32
            return weights
        return gguf.quants.quantize(weights, qtype)

    out = check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(staging, arch=_field(reader, gguf.Keys.General.ARCHITECTURE))
    for name, value, kind, sub_kind in _metadata(reader):
        if name == gguf.Keys.General.FILE_TYPE:
            value = file_type
        writer.add_key_value(name, value, kind, sub_type=sub_kind)
    writer.add_string("structune.adapter", adapter_id)

    # Tensor infos (name, shape, type, size) come first in the file and follow from the
    # shapes, so the tensors can then be converted and written one at a time: the whole
    # model is never in memory.
    for tensor in reader.tensors:
        shape = [int(n) for n in reversed(tensor.shape)]
        converted_type = gguf.GGMLQuantizationType.F32 if len(shape) == 1 else qtype
        raw = gguf.quants.quant_shape_to_byte_shape(shape, converted_type)
        writer.add_tensor_info(
            tensor.name, raw, np.dtype(np.uint8), int(np.prod(raw)), converted_type
        )
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in tqdm(
            reader.tensors, desc="merging", unit="tensor", disable=None if progress else True
        ):
            writer.write_tensor_data(merged(tensor))
        writer.close()
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    staging.replace(out)
    return out


# --type → (ggml tensor type, the file's general.file_type: llama.cpp's LlamaFileType)
_GGUF_TYPES: dict[str, tuple[str, int]] = {
    "f32": ("F32", 0),
    "f16": ("F16", 1),
    "q8_0": ("Q8_0", 7),
}


def _lora_deltas(adapter_id: str) -> dict[str, Any]:
    """scale · B·A per llama.cpp weight name, in the base GGUF's row order."""
    manifest = load_manifest(adapter_id)
    config = json.loads((manifest.path / "adapter_config.json").read_text())
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise UserError("adapters with per-layer ranks (rank_pattern) cannot be merged to GGUF")
    rank, alpha = config["r"], config["lora_alpha"]
    scale = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
    return {name: scale * (b @ a) for name, a, b in lora_pairs(adapter_id)}


def _metadata(reader: Any) -> Iterator[tuple[str, Any, Any, Any]]:
    """The base file's key-value pairs, less those the writer sets itself."""
    import gguf

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        yield field.name, field.contents(), kind, sub_kind


def _field(reader: Any, name: str) -> Any:
    field = reader.fields.get(name)
    return field.contents() if field is not None else None


def _base_gguf(base: str) -> Path:
    from structune.models.loading import BUILTIN_MODELS, builtin_gguf_path

    if base in BUILTIN_MODELS:
        return builtin_gguf_path(base)
    if base.endswith(".gguf") and Path(base).is_file():
        return Path(base)
    raise UserError(
        f"a merged GGUF is written from the base model's GGUF file; {base} is not one. "
        "Export `--format merged` and convert that folder with llama.cpp's convert_hf_to_gguf.py"
    )
