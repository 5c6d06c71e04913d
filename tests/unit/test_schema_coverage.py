"""Schema coverage of constrained decoding: for each real-world schema shape, either a
clear refusal up front or every finished answer validates with the `jsonschema` library.
A tiny random Llama decodes: it knows nothing, so only the grammar makes answers valid."""

from __future__ import annotations

import json

import jsonschema
import pytest

from structune import UserError
from structune.constrain.grammar import compile_schema
from structune.llms.local import LocalLLM
from structune.llms.sampling import Sampling

ENFORCED = {
    "nested objects": {
        "type": "object",
        "properties": {
            "paper": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 12},
                    "year": {"type": "integer"},
                },
                "required": ["title", "year"],
                "additionalProperties": False,
            }
        },
        "required": ["paper"],
        "additionalProperties": False,
    },
    "bounded array of objects": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["n"],
            "additionalProperties": False,
        },
        "minItems": 1,
        "maxItems": 3,
    },
    "enum and const": {
        "type": "object",
        "properties": {"kind": {"enum": ["book", "paper", "talk"]}, "v": {"const": 2}},
        "required": ["kind", "v"],
        "additionalProperties": False,
    },
    "optional fields": {
        "type": "object",
        "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}},
        "additionalProperties": False,
    },
    "anyOf": {"anyOf": [{"type": "integer", "minimum": 10, "maximum": 99}, {"type": "boolean"}]},
    "$ref and $defs": {
        "$defs": {
            "Author": {
                "type": "object",
                "properties": {"y": {"type": "integer"}},
                "required": ["y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"first": {"$ref": "#/$defs/Author"}},
        "required": ["first"],
        "additionalProperties": False,
    },
    "string format date": {"type": "string", "format": "date"},
    "numeric bounds": {"type": "number", "minimum": -1.5, "maximum": 2.5},
    "pattern": {"type": "string", "pattern": "^[A-Z][a-z]{1,6}$"},
    "nullable via type list": {"type": ["integer", "null"]},
}

# Without relaxing (`structune.constrain.checked`); what is rewritten exactly compiles
# (tests/test_schema_rewrite.py).
REFUSED = {
    "not with a pattern": {"not": {"type": "string", "pattern": "^a"}},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "a format only a validator knows": {"type": "string", "format": "regex"},
    "look-ahead pattern": {"type": "string", "pattern": "^(?=a)a$"},
}


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=4)


@pytest.mark.parametrize("name", list(ENFORCED))
def test_every_finished_answer_validates(tiny_llm, name):
    schema = ENFORCED[name]
    prompts = [[{"role": "user", "content": f"Answer {i}: {name}"}] for i in range(4)]
    completions = tiny_llm.complete_many(
        prompts, max_tokens=48, sampling=Sampling(temperature=1.0), json_schema=schema
    )
    finished = [c for c in completions if c.finish_reason == "stop"]
    for completion in finished:
        jsonschema.validate(json.loads(completion.text), schema)
    assert finished, f"no answer finished within 48 tokens for {name}"


@pytest.mark.parametrize("name", list(REFUSED))
def test_unenforceable_schemas_are_refused(tiny_llm, name):
    with pytest.raises(UserError, match=r"can(not)? enforce|cannot be compiled"):
        compile_schema(REFUSED[name], tiny_llm.tokenizer)


def test_a_schema_that_is_not_an_object_is_refused(tiny_llm):
    with pytest.raises(UserError, match="must be an object"):
        compile_schema(["type", "string"], tiny_llm.tokenizer)  # type: ignore[arg-type]


def test_a_contradictory_schema_stops_with_a_clear_error(tiny_llm):
    schema = {"type": "integer", "minimum": 3, "maximum": 1}
    with pytest.raises(UserError, match=r"admits no value|cannot enforce"):
        tiny_llm.complete([{"role": "user", "content": "n?"}], max_tokens=8, json_schema=schema)
