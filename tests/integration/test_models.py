"""The bundled base model, end to end: conversion, generation, fine-tune, reload by id."""

from __future__ import annotations

import hashlib
import json

import pytest
from safetensors.torch import load_file

from structune import BackendError, DatasetStore, TrainConfig, UserError, finetune
from structune.constrain.checked import MAX_RESAMPLES, relaxed
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_gguf_path, load_model, resolve_model
from structune.record import import_jsonl, record
from structune.tasks.albums import album_program, curated_albums, curated_teacher
from structune.train.sources import conversations_from_jsonl

pytestmark = pytest.mark.slow


def test_bundled_model_is_cached_as_a_plain_transformers_model(smollm2_dir):
    assert (smollm2_dir / "model.safetensors").is_file()
    model, tokenizer = load_model("smollm2-135m")
    assert 130e6 < model.num_parameters() < 140e6
    assert getattr(model.config, "quantization_config", None) is None  # trainable
    assert "<|im_start|>" in tokenizer.chat_template
    assert resolve_model("smollm2-135m") == str(smollm2_dir)  # second resolve: the cache


def test_truncated_gguf_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(builtin_gguf_path("smollm2-135m").read_bytes()[:1_000_000])
    with pytest.raises(BackendError, match="corrupt or truncated"):
        resolve_model(str(broken))


def test_missing_model_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(UserError, match=r"no config\.json"):
        resolve_model(str(tmp_path))


def test_base_model_answers_batched(smollm2_dir):
    llm = LocalLLM.load("smollm2-135m", batch_size=2)
    conversations = [album_program.messages({"movie_name": m}) for m in ["Heat", "Alien", "Up"]]
    completions = llm.complete_many(conversations, max_tokens=24)
    assert len(completions) == 3
    for c in completions:
        assert c.text and c.completion_tokens and c.completion_tokens <= 24
        assert c.prompt_tokens and c.prompt_tokens > 200  # the schema is in the prompt
    assert llm.model_id == "smollm2-135m"


def test_import_train_reload_by_id_and_answer(smollm2_dir, tmp_path):
    """The foundation's end-to-end: import a few examples → train a few steps → the
    adapter changed, the base did not, it loads back by id and answers."""
    with DatasetStore(tmp_path / "src.sqlite") as store:
        movies = [{"movie_name": a["movie_name"]} for a in curated_albums()[:4]]
        record(album_program, curated_teacher(), movies, store=store, progress=False)
        from structune.record import export_jsonl

        export_jsonl(store, tmp_path / "albums.jsonl")
    with DatasetStore(tmp_path / "dst.sqlite") as store:
        assert import_jsonl(tmp_path / "albums.jsonl", store).added == 4

    base_digest = hashlib.sha256((smollm2_dir / "model.safetensors").read_bytes()).hexdigest()
    config = TrainConfig(max_steps=2, batch_size=2, lora_r=4, lora_alpha=8)
    conversations = conversations_from_jsonl(tmp_path / "albums.jsonl")
    manifest = finetune(conversations, config=config, task="album", progress=False)

    weights = load_file(manifest.path / "adapter_model.safetensors")
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)
    assert (
        hashlib.sha256((smollm2_dir / "model.safetensors").read_bytes()).hexdigest() == base_digest
    )

    tuned = LocalLLM.load(adapter=manifest.id)
    assert tuned.model_id == f"smollm2-135m+{manifest.id}"
    answer = tuned.complete(album_program.messages({"movie_name": "Goodfellas"}), max_tokens=24)
    assert answer.text and answer.completion_tokens


def test_base_model_under_the_album_grammar_never_claims_an_invalid_answer(smollm2_dir):
    from structune.evaluate.compare import compare
    from structune.llms.base import Constrained

    base = LocalLLM.load("smollm2-135m", batch_size=4)
    inputs = [{"movie_name": m} for m in ["Heat", "Alien", "Up", "Jaws"]]
    grammar = Constrained(base, album_program.json_schema)
    result = compare(album_program, {"grammar": grammar}, inputs, max_tokens=160)
    for answer in result.answers["grammar"]:
        assert answer.text.startswith('{"name":"')  # compact JSON in the schema's key order
        assert answer.valid or answer.truncated  # finished answers always validate


def test_llama_cpp_path_holds_answers_to_a_schema_and_refuses_what_it_cannot():
    from structune.llms.llama_cpp import LlamaCppLLM

    llm = LlamaCppLLM(builtin_gguf_path("smollm2-135m"), n_ctx=1024, n_threads=2)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Is water wet? Answer in JSON."}]
    completion = llm.complete(messages, max_tokens=32, json_schema=schema)
    assert completion.text.replace(" ", "") in ('{"ok":true}', '{"ok":false}')
    # Rewritten exactly as for LocalLLM: a tagged oneOf is llguidance's anyOf.
    tagged = {
        "oneOf": [
            {"type": "object", "properties": {"kind": {"const": a}}, "required": ["kind"]}
            for a in ("a", "b")
        ]
    }
    completion = llm.complete(messages, max_tokens=32, json_schema=tagged)
    assert completion.schema_check is not None and completion.schema_check.violation is None
    assert completion.schema_check.coverage.rewritten, completion.schema_check
    assert json.loads(completion.text)["kind"] in ("a", "b")
    # What no grammar holds is refused unless relaxed, then checked: three distinct of two.
    unique = {"type": "array", "items": {"enum": [1, 2]}, "minItems": 3, "maxItems": 3,
              "uniqueItems": True}  # fmt: skip
    with pytest.raises(UserError, match="uniqueItems"):
        llm.complete(messages, json_schema=unique)
    check = llm.complete(messages, max_tokens=16, json_schema=relaxed(unique)).schema_check
    assert check is not None and check.resamples == MAX_RESAMPLES
    assert "non-unique" in (check.violation or "")


def test_llama_cpp_refuses_a_truncated_gguf(tmp_path):
    from structune.llms.llama_cpp import LlamaCppLLM

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(builtin_gguf_path("smollm2-135m").read_bytes()[:1_000_000])
    with pytest.raises(BackendError, match="cannot load"):
        LlamaCppLLM(broken)


def test_adapter_exports_to_a_gguf_lora_that_llama_cpp_applies(smollm2_dir, tmp_path):
    import gguf
    from llama_cpp import Llama

    from structune.export.gguf_lora import export_gguf_lora

    conversations = [
        [
            *album_program.messages({"movie_name": a["movie_name"]}),
            {"role": "assistant", "content": json.dumps(a["album"])},
        ]
        for a in curated_albums()[:4]
    ]
    config = TrainConfig(max_steps=1, batch_size=2, lora_r=4, lora_alpha=8)
    manifest = finetune(conversations, config=config, task="album", progress=False)
    path = export_gguf_lora(manifest.id, tmp_path / "adapter.gguf")

    reader = gguf.GGUFReader(path)
    names = {t.name: t for t in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.ffn_down.weight.lora_b" in names
    assert list(names["blk.0.attn_q.weight.lora_a"].shape) == [576, 4]  # ggml order: (in, r)

    gguf_base = str(builtin_gguf_path("smollm2-135m"))
    llama = Llama(gguf_base, lora_path=str(path), n_ctx=1024, n_threads=2, verbose=False)
    out = llama.create_chat_completion(
        album_program.messages({"movie_name": "Heat"}), max_tokens=8, temperature=0
    )
    assert out["usage"]["completion_tokens"] > 0


def test_should_stop_ends_decoding_at_the_next_step(tiny_model_dir):
    from structune.llms.local import GenerationStopped

    llm = LocalLLM.load(str(tiny_model_dir))
    asked = []

    def stop_after_five_steps() -> bool:
        asked.append(True)
        return len(asked) > 5

    prompts = [[{"role": "user", "content": "Name a movie."}]] * 2
    with pytest.raises(GenerationStopped):
        llm.complete_many(prompts, max_tokens=200, should_stop=stop_after_five_steps)
    assert len(asked) <= 8  # not the 200 steps a random model would run without a stop
    finished = llm.complete_many(prompts, max_tokens=8, should_stop=lambda: False)
    assert all(c.completion_tokens for c in finished)
