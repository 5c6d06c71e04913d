"""`structune export-adapter --format gguf`: the adapter merged into one GGUF for llama.cpp.

The adapter here is trained for two steps at a high learning rate, so that it visibly
changes the base model's greedy answers: agreement with the merged file then shows the
merge (scale, q/k row order, every adapted weight), not just the base weights.
"""

import json

import gguf
import pytest

from structune import TrainConfig, finetune
from structune.cli import main
from structune.errors import UserError
from structune.export.gguf_merged import export_gguf_merged
from structune.llms.llama_cpp import LlamaCppLLM
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_gguf_path
from structune.tasks.albums import (
    album_program,
    curated_conversations,
    heldout_movies,
)


@pytest.fixture(scope="module")
def strong_adapter(smollm2_dir):
    config = TrainConfig(max_steps=2, batch_size=2, lora_r=8, learning_rate=0.005)
    return finetune(curated_conversations(4), config=config, task="album", progress=False)


@pytest.mark.slow
def test_the_merged_gguf_answers_exactly_like_the_adapter_in_transformers(strong_adapter, tmp_path):
    path = export_gguf_merged(strong_adapter.id, tmp_path / "merged.gguf", progress=False)

    merged, base = gguf.GGUFReader(path), gguf.GGUFReader(builtin_gguf_path("smollm2-135m"))
    template = gguf.Keys.Tokenizer.CHAT_TEMPLATE
    assert merged.fields[template].contents() == base.fields[template].contents()
    assert merged.fields[gguf.Keys.General.FILE_TYPE].contents() == 0  # all F32
    assert [t.name for t in merged.tensors] == [t.name for t in base.tensors]
    assert not list(tmp_path.glob("*.partial"))

    prompts = [album_program.messages({"movie_name": m}) for m in heldout_movies()[:4]]
    # fp32 on both sides: where the CPU has native bf16, LocalLLM would default to it
    tuned = LocalLLM.load(adapter=strong_adapter.id, dtype="float32")
    expected = [c.text for c in tuned.complete_many(prompts, max_tokens=24)]
    plain = LocalLLM.load("smollm2-135m", dtype="float32")
    untuned = [c.text for c in plain.complete_many(prompts, max_tokens=24)]
    assert expected != untuned  # the adapter matters, so agreeing means it was merged
    llama_cpp = LlamaCppLLM(path, n_ctx=1024, n_threads=2)
    assert [llama_cpp.complete(p, max_tokens=24).text for p in prompts] == expected


@pytest.mark.slow
def test_cli_writes_a_merged_gguf_and_its_modelfile(strong_adapter, tmp_path):
    out = tmp_path / "album-f16.gguf"
    argv = ["-q", "export-adapter", strong_adapter.id, str(out), "--format", "gguf"]
    assert main([*argv, "--type", "f16", "--modelfile"]) == 0
    reader = gguf.GGUFReader(out)
    types = {t.tensor_type.name for t in reader.tensors}
    assert types == {"F16", "F32"}  # matrices F16; norms stay F32
    assert reader.fields["structune.adapter"].contents() == strong_adapter.id
    modelfile = (tmp_path / "Modelfile").read_text()
    assert f"FROM ./{out.name}" in modelfile and "ADAPTER" not in modelfile  # beside it
    completion = LlamaCppLLM(out, n_ctx=1024, n_threads=2).complete(
        album_program.messages({"movie_name": "Heat"}),
        max_tokens=64,
        json_schema={
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 40}},
            "required": ["name"],
            "additionalProperties": False,
        },
    )
    assert list(json.loads(completion.text)) == ["name"]


def test_a_base_without_a_gguf_file_is_refused_with_the_way_out(tiny_model_dir, tmp_path):
    config = TrainConfig(max_steps=1, batch_size=2, lora_r=4)
    manifest = finetune(
        curated_conversations(2), base=str(tiny_model_dir), config=config, progress=False
    )
    with pytest.raises(UserError, match="convert_hf_to_gguf"):
        export_gguf_merged(manifest.id, tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())
