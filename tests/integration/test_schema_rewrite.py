"""Schemas past the grammar engine: exact rewrites, and relaxed grammars checked afterwards.

Each rewrite is held to "accepts exactly what the schema accepts" on generated instances,
positive and negative: `jsonschema` on the schema as given (objects closed, as the grammar
closes them) decides, and both the compiled grammar (llguidance's matcher) and `jsonschema`
on the rewritten schema must agree with it. The relaxed path decodes with a tiny random
Llama: a violation of the full schema is decoded again, or raised, never returned as valid.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import pydantic
import pytest

from structune import InvalidOutput, Program, UserError
from structune.constrain.checked import (
    MAX_RESAMPLES,
    RELAX_KEY,
    SchemaChecker,
    relaxed,
    validator_class,
)
from structune.constrain.complement import other_strings
from structune.constrain.grammar import compile_schema, plan_schema
from structune.constrain.strict import strict_objects
from structune.evaluate.compare import compare
from structune.llms.base import Constrained
from structune.llms.local import LocalLLM
from structune.program import canonical_json
from structune.prompting import prompt_once

DRAFT4 = "http://json-schema.org/draft-04/schema#"
DRAFT7 = "http://json-schema.org/draft-07/schema#"
SCALARS: list[Any] = [None, True, 0, 7, 2.5, "", "a", "text", []]


def objects(pool: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every object with some of `pool`'s keys, each with one of its values, keys in order."""
    out: list[dict[str, Any]] = [{}]
    for key, values in pool.items():
        out += [{**o, key: v} for o in out for v in values]
    return out


def validator(schema: Any) -> Any:
    cls = validator_class(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_exact(schema: dict[str, Any], candidates: list[Any], tokenizer: Any, keyword: str):
    compiled = compile_schema(schema, tokenizer)
    assert any(r.startswith(keyword) for r in compiled.coverage.rewritten), compiled.coverage
    assert not compiled.coverage.checked, compiled.coverage
    truth = validator(strict_objects(schema))
    rewritten = validator(plan_schema(schema).schema)
    verdicts = []
    for instance in candidates:
        valid = truth.is_valid(instance)
        assert compiled.accepts(canonical_json(instance)) == valid, (instance, valid)
        assert rewritten.is_valid(instance) == valid, (instance, valid)
        verdicts.append(valid)
    assert any(verdicts) and not all(verdicts), "the candidates must hold both kinds"


TAGGED = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
            "required": ["kind", "x"],
        },
        {
            "type": "object",
            "properties": {"kind": {"enum": ["b", "c"]}, "y": {"type": "boolean"}},
            "required": ["kind"],
        },
    ]
}

EXACT = {
    "oneOf, tagged": (
        TAGGED,
        objects({"kind": ["a", "b", "d"], "x": [1], "y": [True]}) + SCALARS,
        "oneOf",
    ),
    "oneOf, disjoint types through $ref": (
        {
            "$defs": {"Short": {"type": "string", "maxLength": 2}},
            "oneOf": [{"$ref": "#/$defs/Short"}, {"type": "integer"}, {"type": "null"}],
        },
        [*SCALARS, "ab", "abc"],
        "oneOf",
    ),
    "dependentRequired": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {}},
            "dependentRequired": {"a": ["b"], "c": ["a"]},
        },
        objects({"a": [1], "b": [2], "c": [3]}),
        "dependentRequired",
    ),
    "dependentSchemas": (
        {
            "type": "object",
            "properties": {"card": {"type": "string"}, "limit": {"type": "integer"}},
            "dependentSchemas": {"card": {"properties": {"limit": {"maximum": 10}}}},
        },
        objects({"card": ["v"], "limit": [5, 50]}),
        "dependentSchemas",
    ),
    "dependencies, draft 7, both forms": (
        {
            "$schema": DRAFT7,
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "k": {}},
            "additionalProperties": False,
            "dependencies": {"a": ["b"], "k": {"properties": {"b": {"minimum": 5}}}},
        },
        objects({"a": [1], "b": [2, 9], "k": [0]}),
        "dependencies",
    ),
    "if/then/else on a discriminator": (
        {
            "type": "object",
            "properties": {
                "type": {"enum": ["image", "text"]},
                "src": {"type": "string"},
                "body": {"type": "string"},
            },
            "additionalProperties": False,
            "if": {"properties": {"type": {"const": "image"}}, "required": ["type"]},
            "then": {"required": ["src"]},
            "else": {"required": ["body"]},
        },
        objects({"type": ["image", "text"], "src": ["s"], "body": ["b"]}),
        "if",
    ),
    "not type": ({"not": {"type": ["string", "array"]}}, [*SCALARS, {}], "not"),
    "not enum of strings": (
        {"type": "string", "not": {"enum": ["a", "ab", "", "ü"]}},
        [*SCALARS, "ab", "abc", "b", "ü", "üa", "a\n"],
        "not",
    ),
    "not enum of numbers": (
        {"type": "integer", "not": {"enum": [1, 3]}},
        [*SCALARS, 1, 2, 3, 4, -1],
        "not",
    ),
    "not const true": ({"not": {"const": True}}, [*SCALARS, False], "not"),
    "not {} forbids a key": (
        {"type": "object", "properties": {"a": {"type": "integer"}, "x": {"not": {}}}},
        objects({"a": [1], "x": [1]}),
        "not",
    ),
    "not required": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "additionalProperties": False,
            "not": {"required": ["a", "b"]},
        },
        objects({"a": [1], "b": [2]}),
        "not",
    ),
    "not anyOf of required": (
        {
            "type": "object",
            "properties": {"a": {}, "b": {}, "c": {}},
            "additionalProperties": False,
            "not": {"anyOf": [{"required": ["a"]}, {"required": ["b"]}]},
        },
        objects({"a": [1], "b": [1], "c": [1]}),
        "not",
    ),
    "not minimum, draft 4 exclusive flag": (
        {"$schema": DRAFT4, "type": "number", "not": {"minimum": 5, "exclusiveMinimum": True}},
        [*SCALARS, 4, 5, 6, 5.5],
        "not",
    ),
    "not maxLength": ({"type": "string", "not": {"maxLength": 1}}, SCALARS, "not"),
    "unknown format is an annotation": (
        {"type": "string", "format": "semver"},
        [*SCALARS, "1.2.3", "x"],
        "format",
    ),
    "propertyNames on a closed object": (
        {
            "type": "object",
            "properties": {"ok": {"type": "integer"}, "Bad": {"type": "integer"}},
            "propertyNames": {"pattern": "^[a-z]+$"},
        },
        objects({"ok": [1], "Bad": [2]}),
        "propertyNames",
    ),
    "a pattern that matches every name": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "patternProperties": {"^[a-z]*": {"type": "integer", "minimum": 0}},
        },
        objects({"a": [-1, 1], "zz": [-1, 1]}),
        "patternProperties",
    ),
    "$ref siblings in draft 4": (
        {
            "$schema": DRAFT4,
            "definitions": {"n": {"type": "integer"}},
            "$ref": "#/definitions/n",
            "type": "string",
        },
        SCALARS,
        "$ref",
    ),
    "unevaluatedProperties without applicators": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "unevaluatedProperties": False,
        },
        objects({"a": [1, "x"], "b": [1]}),
        "unevaluatedProperties",
    ),
}


@pytest.mark.parametrize("name", list(EXACT))
def test_a_rewrite_accepts_exactly_what_the_schema_accepts(tokenizer, name):
    schema, candidates, keyword = EXACT[name]
    assert_exact(schema, candidates, tokenizer, keyword)


def test_closed_objects_keep_the_keys_the_schema_requires_or_a_sibling_declares(tokenizer):
    requires_id = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["id"]}
    compiled = compile_schema(requires_id, tokenizer)
    assert compiled.accepts('{"a":1,"id":"x"}') and not compiled.accepts('{"a":1,"id":"x","z":1}')
    in_all_of = {
        "$defs": {"B": {"type": "object", "properties": {"b": {"type": "integer"}}}},
        "allOf": [{"anyOf": [{"$ref": "#/$defs/B"}]}, {"required": ["c"]}],
    }
    assert compile_schema(in_all_of, tokenizer).accepts('{"b":1,"c":2}')
    overlapping = {
        "oneOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}},
            {"type": "object", "properties": {"b": {"type": "integer"}}},
        ]
    }
    # closed, {"a": 1} would match the first branch only, but the schema sees it match both
    assert strict_objects(overlapping) == overlapping
    assert strict_objects(TAGGED)["oneOf"][0]["additionalProperties"] is False


def test_a_format_alias_is_held_to_the_format_it_names(tokenizer):
    alias = compile_schema({"type": "string", "format": "datetime"}, tokenizer)
    named = compile_schema({"type": "string", "format": "date-time"}, tokenizer)
    assert any("held to 'date-time'" in r for r in alias.coverage.rewritten)
    for text in ["2024-02-29T10:00:00Z", "2024-13-01T10:00:00Z", "yesterday", "2024-02-29"]:
        assert alias.accepts(json.dumps(text)) == named.accepts(json.dumps(text)), text
    assert alias.accepts('"2024-02-29T10:00:00Z"') and not alias.accepts('"yesterday"')


def test_a_format_with_a_regular_definition_is_held_to_its_regex(tokenizer):
    compiled = compile_schema({"type": "string", "format": "json-pointer"}, tokenizer)
    pointers = ["", "/a", "/a~1b", "//", "/~0"]  # RFC 6901
    assert all(compiled.accepts(json.dumps(p)) for p in pointers)
    assert not any(compiled.accepts(json.dumps(p)) for p in ["a", "/~2", "/a~"])


def test_the_strings_outside_a_set_are_a_regex_for_python_and_the_engine():
    import re

    pattern = re.compile(other_strings(["a", "ab", "", "x/y"]))
    strings = ["a", "ab", "", "x/y", "b", "abc", "x", "x/", "\n"]
    assert [s for s in strings if pattern.search(s)] == ["b", "abc", "x", "x/", "\n"]


def test_an_overlapping_oneof_is_refused_unless_relaxed_and_then_checked(tokenizer):
    schema = {
        "oneOf": [
            {"type": "object", "properties": {"dog": {"type": "string"}}, "required": ["dog"]},
            {"type": "object", "properties": {"cat": {"type": "string"}}, "required": ["cat"]},
        ]
    }
    with pytest.raises(UserError, match=rf"oneOf \(at #\).*relax=True.*{RELAX_KEY}"):
        compile_schema(schema, tokenizer)
    compiled = compile_schema(relaxed(schema), tokenizer)
    assert compiled.coverage.checked == ("oneOf",)
    assert "anyOf" in compiled.coverage.enforced
    assert compiled.checker is not None
    assert compiled.checker.violation('{"dog":"rex"}') is None
    assert "valid under each of" in (compiled.checker.violation('{"dog":"a","cat":"b"}') or "")


def test_what_no_grammar_holds_is_named_with_the_flag_to_pass(tokenizer):
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}  # strings: held
    with pytest.raises(UserError, match=r"uniqueItems \(at #\).*relax=True"):
        compile_schema(schema, tokenizer)
    assert compile_schema(relaxed(schema), tokenizer).coverage.checked == ("uniqueItems",)


def test_a_schema_cannot_make_the_engine_lenient(tokenizer):
    schema = {"type": "string", "format": "regex", "x-guidance": {"lenient": True}}
    with pytest.raises(UserError, match="format"):
        compile_schema(schema, tokenizer)


def test_answers_are_checked_in_the_schemas_own_draft_with_formats():
    checker = SchemaChecker({"type": "string", "format": "date"})
    assert checker.violation('"2024-02-29"') is None
    assert "is not a 'date'" in (checker.violation('"2023-02-29"') or "")  # no leap day
    draft4 = SchemaChecker({"$schema": DRAFT4, "type": "integer", "const": 1})
    assert draft4.violation("2") is None  # `const` is not a draft-4 keyword


# --- decoding: a violation is decoded again, or raised -----------------------------------


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=4)


class Pick(pydantic.BaseModel):
    values: set[Literal[1, 2]] = pydantic.Field(min_length=3, max_length=3)


def test_a_violation_that_survives_the_resamples_is_raised(tiny_llm):
    # Three distinct values out of two: every answer the relaxed grammar allows violates.
    program = Program("Pick {n}", Pick)
    with pytest.raises(UserError, match="uniqueItems"):
        program.run(tiny_llm, {"n": 3}, max_tokens=24, constrained=True)
    with pytest.raises(InvalidOutput, match=f"non-unique.*after {MAX_RESAMPLES} re-samples"):
        program.run(tiny_llm, {"n": 3}, max_tokens=24, constrained=True, relax=True)
    completion = tiny_llm.complete(
        program.messages({"n": 3}), max_tokens=24, json_schema=relaxed(program.json_schema)
    )
    check = completion.schema_check
    assert check is not None and check.resamples == MAX_RESAMPLES
    assert check.coverage.checked == ("uniqueItems",) and "non-unique" in (check.violation or "")


def test_compare_and_prompt_count_such_a_violation_invalid(tiny_llm):
    program = Program("Pick {n}", Pick)
    models = {"relaxed": Constrained(tiny_llm, relax=True)}
    (answer,) = compare(program, models, [{"n": 3}], max_tokens=24).answers["relaxed"]
    assert answer.parsed and not answer.valid and "non-unique" in (answer.error or "")
    with pytest.raises(InvalidOutput, match="non-unique"):
        prompt_once(
            tiny_llm,
            "Pick 3",
            schema=Pick.model_json_schema(),
            constrained=True,
            relax=True,
            max_tokens=24,
        )


def test_a_violation_is_decoded_again_with_a_seed_until_it_validates(tiny_llm):
    words = ["red", "green", "blue", "black", "white"]
    base = {
        "type": "object",
        "properties": {"v": {"enum": words}},
        "required": ["v"],
        "additionalProperties": False,
    }
    prompt = [{"role": "user", "content": "A colour?"}]
    greedy = json.loads(tiny_llm.complete(prompt, max_tokens=16, json_schema=base).text)["v"]
    # The greedy answer, forbidden by a `not` the grammar cannot hold (a pattern).
    schema = relaxed({**base, "not": {"properties": {"v": {"pattern": f"^{greedy}$"}}}})
    runs = [tiny_llm.complete(prompt, max_tokens=16, json_schema=schema) for _ in range(2)]
    for completion in runs:
        check = completion.schema_check
        assert check is not None and check.coverage.checked == ("not",)
        assert check.resamples >= 1 and check.violation is None, check
        assert json.loads(completion.text)["v"] in set(words) - {greedy}
    assert runs[0].text == runs[1].text  # seeded: the same answer on a rerun


def test_an_exactly_rewritten_answer_validates_without_resampling(tiny_llm):
    prompts = [[{"role": "user", "content": f"Item {i}"}] for i in range(4)]
    completions = tiny_llm.complete_many(prompts, max_tokens=40, json_schema=TAGGED)
    for completion in completions:
        check = completion.schema_check
        assert check is not None and check.violation is None and not check.coverage.checked
        if completion.finish_reason == "stop":
            assert validator(TAGGED).is_valid(json.loads(completion.text)), completion.text


# --- the server takes the same path --------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> Iterator[str]:
    import socket

    import uvicorn

    from structune.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(base=str(tiny_model_dir)), port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def ask(url: str, model: str, schema: dict[str, Any]) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Pick."}],
        "max_tokens": 24,
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_the_server_refuses_relaxes_and_checks_like_program_run(server, tiny_model_dir):
    model, schema = str(tiny_model_dir), Pick.model_json_schema()
    refused = ask(server, model, schema)
    assert refused.status_code == 400 and RELAX_KEY in refused.json()["error"]["message"]
    violated = ask(server, model, relaxed(schema))
    assert violated.status_code == 500, violated.text
    assert "non-unique" in violated.json()["error"]["message"]
    served = ask(server, model, TAGGED)
    assert served.status_code == 200, served.text
    assert served.json()["schema_check"]["checked"] == []
    assert any(r.startswith("oneOf") for r in served.json()["schema_check"]["rewritten"])
