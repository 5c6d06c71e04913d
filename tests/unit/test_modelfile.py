"""`structune export-adapter --modelfile`: an Ollama Modelfile for the exported GGUF LoRA.

Ollama is not installed here, so the Modelfile is checked against what Ollama would read:
the files it names exist, its stops are the tokenizer's, and its Go template (with its
SYSTEM) renders a conversation to exactly the text the real chat template renders.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer, GenerationConfig

from structune import TrainConfig, finetune
from structune.cli import main
from structune.export.modelfile import write_modelfile
from structune.models.chat import render_chat
from structune.models.loading import builtin_gguf_path
from structune.tasks.albums import album_program, curated_conversations


@pytest.fixture(scope="module")
def adapter(tiny_model_dir):
    conversations = curated_conversations(2)
    config = TrainConfig(max_steps=1, batch_size=2, lora_r=4)
    return finetune(conversations, base=str(tiny_model_dir), config=config, progress=False)


def read_modelfile(path: Path) -> dict[str, list[str]]:
    """Instruction → its arguments, in order (triple-quoted values may span lines)."""
    found: dict[str, list[str]] = {}
    for name, quoted, plain in re.findall(
        r'^(\w+) (?:"""(.*?)"""|(.*?))$', path.read_text(), re.MULTILINE | re.DOTALL
    ):
        found.setdefault(name, []).append(quoted or plain)
    return found


def render_go_template(template: str, messages: list[dict[str, str]]) -> str:
    """The one Go template shape written for ChatML: a range over .Messages, then a tail."""
    body, tail = re.fullmatch(
        r"\{\{- range \.Messages \}\}(.*)\{\{ end \}\}(.*)", template, re.S
    ).groups()
    return (
        "".join(
            body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
            for m in messages
        )
        + tail
    )


def test_export_adapter_writes_a_modelfile_for_ollama(adapter, tiny_model_dir, tmp_path):
    out = tmp_path / "adapter.gguf"
    assert main(["-q", "export-adapter", adapter.id, str(out), "--modelfile"]) == 0
    modelfile = read_modelfile(tmp_path / "Modelfile")

    (base,) = modelfile["FROM"]  # a transformers folder: named where it is
    assert Path(base) == tiny_model_dir.resolve() and (Path(base) / "config.json").is_file()
    assert modelfile["ADAPTER"] == ["./adapter.gguf"] and out.is_file()  # beside it
    assert modelfile["PARAMETER"][-1] == "temperature 0"

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos_ids = GenerationConfig.from_pretrained(tiny_model_dir).eos_token_id
    eos_ids = eos_ids if isinstance(eos_ids, list) else [eos_ids]
    expected = {tokenizer.eos_token, *tokenizer.convert_ids_to_tokens(eos_ids)}
    stops = [json.loads(p.removeprefix("stop ")) for p in modelfile["PARAMETER"] if "stop" in p]
    assert set(stops) == expected and len(stops) == len(expected)

    # Ollama puts SYSTEM first when a request has none: the system prompt the adapter was
    # trained with, so a request to Ollama renders as the training conversations did.
    (template,) = modelfile["TEMPLATE"]
    (system,) = modelfile["SYSTEM"]
    trained = album_program.messages({"movie_name": "Heat"})
    assert system == trained[0]["content"] == adapter.system_prompt
    user = trained[1:]
    ollama = render_go_template(template, [{"role": "system", "content": system}, *user])
    assert ollama == render_chat(tokenizer, trained, add_generation_prompt=True)
    chat = [
        {"role": "system", "content": "Be brief."},
        *user,
        {"role": "assistant", "content": "{}"},
    ]
    chat.append({"role": "user", "content": "Alien"})
    ollama = render_go_template(template, chat)
    assert ollama == render_chat(tokenizer, chat, add_generation_prompt=True)


def test_an_adapter_of_the_builtin_base_names_the_bundled_gguf(adapter, tmp_path):
    # The Modelfile needs only the manifest's base: relabel the tiny adapter's manifest.
    relabelled = adapter.model_copy(update={"id": "on-smollm2", "base_model": "smollm2-135m"})
    shutil.copytree(adapter.path, relabelled.path)
    (relabelled.path / "structune.json").write_text(relabelled.model_dump_json())
    lora = tmp_path / "adapter.gguf"
    lora.write_bytes(b"GGUF")

    modelfile = read_modelfile(write_modelfile(relabelled.id, lora))
    # The bundled GGUF is copied beside the Modelfile: the folder moves as one.
    bundled = builtin_gguf_path("smollm2-135m")
    assert modelfile["FROM"] == [f"./{bundled.name}"]
    assert (tmp_path / bundled.name).read_bytes() == bundled.read_bytes()
    assert modelfile["ADAPTER"] == ["./adapter.gguf"]
