"""Schema-constrained decoding: a tiny random Llama held to small schemas (it can only
finish by producing what the grammar allows), and the refusal of unenforceable schemas."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import pydantic
import pytest

from structune import CallableLLM, Program, UserError
from structune.constrain.grammar import compile_schema
from structune.constrain.strict import strict_objects
from structune.llms.base import Constrained
from structune.llms.local import LocalLLM
from structune.llms.sampling import GREEDY, Sampling


class Verdict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    ok: bool
    level: Literal["low", "mid", "high"]


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=3)


PROGRAM = Program("Is {thing} fine?", Verdict)


def test_every_row_of_a_batch_decodes_a_valid_answer(tiny_llm):
    inputs = [{"thing": t} for t in ["tea", "a very long description of coffee " * 5, "x", "y"]]
    conversations = [PROGRAM.messages(i) for i in inputs]
    completions = tiny_llm.complete_many(
        conversations, max_tokens=40, json_schema=PROGRAM.json_schema
    )
    for completion in completions:
        assert completion.finish_reason == "stop"
        Verdict.model_validate_json(completion.text)  # raises if invalid
    # unconstrained, the same random model writes noise
    plain = tiny_llm.complete_many(conversations[:1], max_tokens=10)[0]
    with pytest.raises(pydantic.ValidationError):
        Verdict.model_validate_json(plain.text)


def test_program_run_constrained(tiny_llm):
    verdict = PROGRAM.run(tiny_llm, {"thing": "tea"}, max_tokens=40, constrained=True)
    assert isinstance(verdict, Verdict)


def test_constrained_wrapper_is_a_model_of_its_own(tiny_llm):
    wrapped = Constrained(tiny_llm, PROGRAM.json_schema)
    assert wrapped.model_id.endswith("+grammar")
    text = wrapped.complete(PROGRAM.messages({"thing": "tea"}), max_tokens=40).text
    assert Verdict.model_validate_json(text)


def test_truncation_is_reported_not_hidden(tiny_llm):
    completion = tiny_llm.complete(
        PROGRAM.messages({"thing": "tea"}), max_tokens=2, json_schema=PROGRAM.json_schema
    )
    assert completion.finish_reason == "length"


@pytest.mark.parametrize(
    ("schema", "feature"),
    [
        ({"not": {"type": "string", "pattern": "^a"}}, "not"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "regex"}, "format"),
        ({"type": "string", "pattern": "^(?=x)"}, "look-around"),
    ],
)
def test_unenforceable_schema_features_are_refused_by_name(tiny_llm, schema, feature):
    with pytest.raises(UserError, match=feature):
        compile_schema(schema, tiny_llm.tokenizer)


def test_grammars_are_cached_per_schema_and_tokenizer(tiny_llm):
    schema = PROGRAM.json_schema
    assert compile_schema(schema, tiny_llm.tokenizer) is compile_schema(
        json.loads(json.dumps(schema)), tiny_llm.tokenizer
    )


class Song(pydantic.BaseModel):
    title: str
    length_seconds: int


class Album(pydantic.BaseModel):
    name: str
    songs: list[Song]


def test_objects_are_closed_to_undeclared_keys_unless_the_schema_opens_them():
    schema = Album.model_json_schema()
    strict = strict_objects(schema)
    assert strict["additionalProperties"] is False
    assert strict["$defs"]["Song"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the caller's schema is left as it was
    opened = {"type": "object", "properties": {"a": {}}, "additionalProperties": True}
    assert strict_objects(opened) == opened
    data = {"const": {"properties": {"a": 1}}}  # a value that looks like a schema
    assert strict_objects(data) == data
    # allOf members are checked together: closing one would reject the other's keys.
    both = {
        "allOf": [
            {"$ref": "#/$defs/A"},
            {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ],
        "$defs": {"A": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    }
    assert strict_objects(both) == both
    # Members checked against the object's own keys stay open, or no answer could pass.
    kind = {"type": "string"}
    for schema, instance in [
        (
            {
                "type": "object",
                "properties": {"kind": kind},
                "anyOf": [{"properties": {"x": {"type": "integer"}}, "required": ["x"]}],
            },
            {"kind": "k", "x": 1},
        ),
        (
            {
                "$ref": "#/$defs/Base",
                "properties": {"b": {"type": "integer"}},
                "$defs": {"Base": {"type": "object", "properties": {"a": {"type": "integer"}}}},
            },
            {"a": 1, "b": 2},
        ),
    ]:
        jsonschema.validate(instance, schema)
        jsonschema.validate(instance, strict_objects(schema))


def test_a_constrained_answer_holds_only_declared_keys(tiny_llm):
    # All optional: without closed objects the random model could add any key it likes.
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
    }
    prompts = [[{"role": "user", "content": f"{word}?"}] for word in ["x", "tea", "ok", "no"]]
    for completion in tiny_llm.complete_many(prompts, max_tokens=40, json_schema=schema):
        assert completion.finish_reason == "stop", completion.text
        assert set(json.loads(completion.text)) <= {"a", "b"}, completion.text


def test_a_callable_model_refuses_a_schema_instead_of_ignoring_it():
    llm = CallableLLM(lambda m: "{}")
    with pytest.raises(UserError, match="cannot be held to a schema"):
        llm.complete([{"role": "user", "content": "hi"}], json_schema={"type": "object"})


@pytest.mark.parametrize("sampling", [GREEDY, Sampling(temperature=1.0)])
def test_a_value_still_open_as_the_budget_runs_out_is_closed_and_said_so(tiny_llm, sampling):
    # The random model rarely ends a free string by itself: it would be cut off. Inside the
    # string "]" and "}" are ordinary characters, so only the quote may close it.
    schema = {
        "type": "object",
        "properties": {"note": {"type": "string"}, "more": {"type": "array"}},
        "required": ["note"],
    }
    prompts = [[{"role": "user", "content": f"{word}?"}] for word in ["x", "tea", "ok", "a"]]
    completions = tiny_llm.complete_many(
        prompts, max_tokens=48, json_schema=schema, sampling=sampling
    )
    for completion in completions:
        assert completion.finish_reason == "stop", completion.text
        assert completion.completion_tokens <= 48
        assert isinstance(json.loads(completion.text)["note"], str)
    assert any(c.closed_early for c in completions)
    # Plain decoding never claims it.
    assert not any(c.closed_early for c in tiny_llm.complete_many(prompts, max_tokens=8))


def test_an_answer_the_model_ends_itself_is_not_reported_closed_early(tiny_llm):
    choice = {
        "type": "object",
        "properties": {"c": {"enum": ["yes", "no"]}, "d": {"type": "boolean"}},
        "required": ["c", "d"],
    }
    for budget in (12, 16, 40):
        completion = tiny_llm.complete(
            [{"role": "user", "content": "x?"}], max_tokens=budget, json_schema=choice
        )
        assert completion.finish_reason == "stop" and not completion.closed_early, budget


def test_inside_a_string_only_the_quote_closes(tiny_llm):
    from budget_closing import allowed_when_closing

    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    # "]" and "}" are text inside the string
    allowed = allowed_when_closing(schema, tiny_llm.tokenizer, '{"note":"a]b}c]d}')
    assert allowed and all(text.startswith('"') for text in allowed), allowed


def test_an_answer_closed_by_the_budget_is_recorded_as_invalid(tiny_llm, tmp_path):
    from structune.record import DatasetStore, record

    class Note(pydantic.BaseModel):
        note: str = pydantic.Field(pattern="^[a-z ]*$")  # the random model loops in it

    program = Program("Note on {thing}", Note)
    with DatasetStore(tmp_path / "d.sqlite") as store:
        record(program, tiny_llm, [{"thing": "tea"}], store=store, max_tokens=48, constrained=True)
        (example,) = store.examples(program.name)
    assert not example.valid and example.error.startswith("closed early"), example.error
