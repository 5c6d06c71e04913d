"""A base model with its adapter merged in → a standalone transformers model directory.

The directory holds safetensors weights, the tokenizer with its chat template, and a
generation config whose end-of-sequence token is the chat template's end-of-turn token,
so any transformers-based stack (or vLLM) answers exactly as `LocalLLM.load(adapter=...)`.
"""

from __future__ import annotations

from pathlib import Path

from structune.adapters import load_manifest


def export_merged(adapter_id: str, out: str | Path) -> Path:
    """Merge adapter `adapter_id` into its base and save the result in the directory `out`."""
    from structune.llms.local import LocalLLM

    manifest = load_manifest(adapter_id)
    llm = LocalLLM.load(adapter=manifest.id, dtype="float32")
    out = Path(out)
    llm.model.generation_config.eos_token_id = llm.tokenizer.eos_token_id
    llm.model.generation_config.pad_token_id = llm.tokenizer.pad_token_id
    llm.model.save_pretrained(out)
    llm.tokenizer.save_pretrained(out)
    (out / "structune.json").write_text(manifest.model_dump_json(indent=2))
    return out
