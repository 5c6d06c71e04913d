"""The whole path on each architecture a user may bring: tokenize with its chat template,
train LoRA, decode under a JSON-schema and an extractive grammar, export, reload.

Each row of `ARCHITECTURES` is a tiny random-initialised model built from a transformers
config (no weights to download), with SmolLM2's tokenizer wearing that family's chat
template and end-of-turn token. A new architecture is one more row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_SHAPE, save_tiny_model
from structune import Program, TrainConfig, finetune
from structune.adapters import load_manifest
from structune.constrain import Extracted
from structune.export.merged import export_merged
from structune.llms.local import LocalLLM
from structune.models.chat import tokenize_chat
from structune.tasks.albums import album_program, curated_conversations
from structune.train.data import IGNORE_INDEX, tokenize_conversation


@dataclass(frozen=True)
class Architecture:
    """A family as a user's checkpoint of it arrives: config and model classes (names in
    transformers), config entries beyond `TINY_SHAPE`, its chat template (None: SmolLM2's
    ChatML) and the special tokens that template writes."""

    config_class: str
    model_class: str
    config: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    special_tokens: dict[str, Any] = field(default_factory=dict)


# Qwen2.5's template without its tool calls: ChatML with a default system prompt.
QWEN_TEMPLATE = """{%- if messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role != 'system' or not loop.first %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""  # noqa: E501

# Gemma 3's template: no system role (it opens the first user turn), contents trimmed.
GEMMA_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{%- set first_user_prefix = '' -%}
{%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}
{{- message['content'] | trim }}{{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"""

ARCHITECTURES = {
    "llama": Architecture("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": Architecture("Qwen2Config", "Qwen2ForCausalLM", chat_template=QWEN_TEMPLATE),
    "gemma3": Architecture(
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        config={
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 16,  # shorter than the prompts, so sliding layers slide
            "layer_types": ["sliding_attention", "full_attention"],
        },
        chat_template=GEMMA_TEMPLATE,
        special_tokens={
            "bos_token": "<bos>",
            "eos_token": "<end_of_turn>",
            "additional_special_tokens": ["<start_of_turn>"],
        },
    ),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def model_dir(request, smollm2_dir: Path, tmp_path_factory) -> Path:
    import transformers

    arch = ARCHITECTURES[request.param]
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.add_special_tokens(arch.special_tokens)
    if arch.chat_template is not None:
        tokenizer.chat_template = arch.chat_template
    config = getattr(transformers, arch.config_class)(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        **arch.config,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return save_tiny_model(out, getattr(transformers, arch.model_class), config, tokenizer)


def test_loss_falls_on_the_answer_only_under_each_chat_template(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    conversation = curated_conversations(1)[0]
    example = tokenize_conversation(tokenizer, conversation, max_length=2048)
    prompt_ids = tokenize_chat(tokenizer, conversation[:-1], add_generation_prompt=True)
    assert example.input_ids[: len(prompt_ids)] == prompt_ids  # as inference reads it
    assert set(example.labels[: len(prompt_ids)]) == {IGNORE_INDEX}
    answer = [t for t in example.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer) == conversation[-1]["content"] + tokenizer.eos_token


def test_lora_adapts_every_linear_layer_of_attention_and_mlp(model_dir):
    from structune.models.loading import load_model
    from structune.train.lora import with_lora

    model, _ = load_model(str(model_dir))
    layers = model.get_decoder().layers
    linear = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in name
    }
    assert len(linear) == 7 * len(layers)  # q, k, v, o; gate, up, down
    peft_model = with_lora(model, TrainConfig(lora_r=4, lora_alpha=8), None)
    adapted = {
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A")
    }
    assert adapted == linear  # and not the vocabulary projection


class Names(pydantic.BaseModel):
    names: list[Annotated[str, Extracted(source="text"), pydantic.Field(min_length=1)]] = (
        pydantic.Field(max_length=2)
    )


NAMES = Program("Who is named in: {text}", Names)
ALBUM_INPUTS = [{"movie_name": "The Lion King"}]
NAMES_INPUTS = [{"text": "Ada Lovelace met Charles Babbage in 1833."}]


def answers(llm: LocalLLM) -> list[str]:
    """Greedy answers: plain, under the album's JSON-schema grammar, under an extractive one."""
    plain = llm.complete_many([album_program.messages(i) for i in ALBUM_INPUTS], max_tokens=12)
    album = llm.complete_many(
        [album_program.messages(i) for i in ALBUM_INPUTS],
        max_tokens=32,
        json_schema=album_program.json_schema,
    )
    names = llm.complete_many(
        [NAMES.messages(i) for i in NAMES_INPUTS],
        max_tokens=32,
        json_schema=[NAMES.decoding_schema(i) for i in NAMES_INPUTS],
    )
    for completion, item in zip(names, NAMES_INPUTS, strict=True):
        if completion.finish_reason == "stop":
            NAMES.parse(completion.text, item)  # raises unless every name is in the text
    for completion in album:
        assert completion.text.startswith("{")
    return [c.text for c in [*plain, *album, *names]]


def test_train_decode_export_and_reload_give_the_same_answers(model_dir, tmp_path):
    manifest = finetune(
        curated_conversations(4),
        base=str(model_dir),
        config=TrainConfig(max_steps=2, batch_size=2, lora_r=4, lora_alpha=8, checkpoint_every=0),
        task=album_program.name,
        progress=False,
    )
    weights = load_file(load_manifest(manifest.id).path / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if ".lora_B." in name]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: it trained

    tuned = LocalLLM.load(adapter=manifest.id, dtype="float32")
    expected = answers(tuned)
    merged = export_merged(manifest.id, tmp_path / "merged")
    assert answers(LocalLLM.load(str(merged), dtype="float32")) == expected


def test_the_gguf_lora_names_each_adapted_weight_as_llama_cpp_does(model_dir, tmp_path):
    import gguf
    import numpy as np

    from structune.export.gguf_lora import export_gguf_lora

    manifest = finetune(
        curated_conversations(2),
        base=str(model_dir),
        config=TrainConfig(max_steps=1, batch_size=2, lora_r=4, lora_alpha=8, checkpoint_every=0),
        progress=False,
    )
    reader = gguf.GGUFReader(export_gguf_lora(manifest.id, tmp_path / "adapter.gguf"))
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
    assert architecture == {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3"}[model_type]
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 7 * TINY_SHAPE["num_hidden_layers"]  # A and B per linear
    assert {"blk.0.attn_q.weight.lora_b", "blk.1.ffn_down.weight.lora_a"} <= set(tensors)

    trained = load_file(load_manifest(manifest.id).path / "adapter_model.safetensors")
    q_b = trained["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].numpy()
    exported = np.asarray(tensors["blk.0.attn_q.weight.lora_b"].data).reshape(q_b.shape)
    # llama.cpp keeps llama's q/k rows in its rotary order; other families as trained
    assert np.array_equal(exported, q_b) == (architecture != "llama")
