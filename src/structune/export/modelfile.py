"""An Ollama Modelfile for an exported GGUF: weights (base + LoRA, or merged), chat
template, stop tokens.

Ollama renders prompts with a Go template, not the tokenizer's Jinja template, so the
Modelfile restates the chat format the adapter was trained on. That is written only for
ChatML-style templates (`<|im_start|>role\\ncontent<|im_end|>\\n`, SmolLM2's), checked by
rendering through the real tokenizer; any other template is refused rather than guessed.
`SYSTEM`, which Ollama adds to a conversation without one, is the system prompt the
adapter was trained with (its manifest records it), else the one the Jinja template adds.
The folder is portable: `FROM` and `ADAPTER` name files beside the Modelfile (a GGUF base
is copied there, as Ollama needs it at `ollama create`); only a transformers-folder base is
named by its absolute path. The stops are the tokenizer's end-of-sequence token and the
generation config's; temperature 0 is structune's greedy decoding.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from structune.adapters import load_manifest
from structune.errors import UserError
from structune.fileio import write_atomically
from structune.messages import Message
from structune.models.chat import render_chat

START, END = "<|im_start|>", "<|im_end|>"

# ChatML in Ollama's Go template syntax; Ollama puts SYSTEM first in .Messages when the
# request has no system message.
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def write_modelfile(
    adapter_id: str, gguf_file: str | Path, out: str | Path | None = None, *, merged: bool = False
) -> Path:
    """Write an Ollama Modelfile that runs adapter `adapter_id` from its GGUF export.

    Args:
        adapter_id: the adapter the GGUF file was exported from.
        gguf_file: the exported GGUF LoRA file (`export_gguf_lora`), applied over the
            base; with `merged`, the standalone merged GGUF (`export_gguf_merged`).
        out: where to write; defaults to `Modelfile` beside `gguf_file`.
        merged: `gguf_file` is a merged model, not a LoRA.

    Returns:
        The Modelfile's path; `ollama create NAME -f PATH` builds a model from it.

    Raises:
        UserError: the base has no local weights, or its chat template is not ChatML.
    """
    from transformers import AutoTokenizer, GenerationConfig

    from structune.models.loading import resolve_model

    manifest = load_manifest(adapter_id)
    gguf_file = Path(gguf_file).resolve()
    if not gguf_file.is_file():
        raise UserError(f"{gguf_file} not found; export it with `structune export-adapter`")
    source = resolve_model(manifest.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    try:
        generation = GenerationConfig.from_pretrained(source)
    except OSError:  # a model directory without generation_config.json
        generation = None
    out = (Path(out) if out is not None else gguf_file.with_name("Modelfile")).resolve()
    weights = _beside(gguf_file, out.parent)
    if merged:
        lines = [f"FROM {weights}"]
    else:
        lines = [f"FROM {_base_weights(manifest.base_model, out.parent)}", f"ADAPTER {weights}"]
    lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
    template_default = _default_system_prompt(tokenizer, manifest.base_model)  # ChatML only
    system = manifest.system_prompt or template_default
    if system is not None:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{token}"' for token in stop_tokens(tokenizer, generation)]
    lines.append("PARAMETER temperature 0")
    write_atomically(out, "\n".join(lines) + "\n")
    return out


def stop_tokens(tokenizer: Any, generation_config: Any = None) -> list[str]:
    """The tokenizer's end-of-sequence token, then any other the generation config ends on."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    tokens = [tokenizer.eos_token, *tokenizer.convert_ids_to_tokens(ids)]
    return list(dict.fromkeys(t for t in tokens if t))


def _base_weights(base: str, folder: Path) -> str:
    """What `FROM` names: the base's GGUF file, copied into `folder`, or its transformers
    directory (Ollama imports safetensors directories of Llama-family models)."""
    from structune.models.loading import BUILTIN_MODELS, builtin_gguf_path

    path = builtin_gguf_path(base) if base in BUILTIN_MODELS else Path(base).expanduser().resolve()
    if path.is_file():
        copy = folder / path.name
        if not (copy.is_file() and copy.stat().st_size == path.stat().st_size):
            shutil.copyfile(path, copy)
        return f"./{copy.name}"
    if (path / "config.json").is_file():
        return str(path)
    raise UserError(
        f"the base model {base!r} is not a local file or directory, so a Modelfile cannot "
        "name it; download it and train the adapter on the local copy"
    )


def _beside(path: Path, folder: Path) -> str:
    """`path` as the Modelfile names it: `./NAME` when it lies in the Modelfile's folder."""
    return f"./{path.name}" if path.parent == folder else str(path)


def _default_system_prompt(tokenizer: Any, base: str) -> str | None:
    """The system prompt the chat template adds to a conversation without one, if any.

    Raises:
        UserError: the template does not render conversations as ChatML.
    """
    probe: list[Message] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "V"},
    ]
    chatml = "".join(f"{START}{m['role']}\n{m['content']}{END}\n" for m in probe)
    if render_chat(tokenizer, probe, add_generation_prompt=True) != chatml + f"{START}assistant\n":
        raise UserError(
            f"the chat template of {base} is not ChatML, and only ChatML is translated to "
            "Ollama's template syntax; write the Modelfile's TEMPLATE by hand"
        )
    user_only = render_chat(tokenizer, probe[1:2], add_generation_prompt=False)
    added = user_only.removesuffix(f"{START}user\nU{END}\n")
    if not added:
        return None
    if not (added.startswith(f"{START}system\n") and added.endswith(f"{END}\n")):
        raise UserError(f"the chat template of {base} adds text Ollama cannot reproduce: {added!r}")
    return added.removeprefix(f"{START}system\n").removesuffix(f"{END}\n")
