"""`structune serve` under abuse, as a real process on 127.0.0.1 with a tiny random model.

Every hostile request (no key, malformed or huge bodies, absurd limits, schemas built to make
the grammar engine work hard) must be answered with a 4xx in OpenAI's error format within
`QUICK_S`, never a 5xx or a hang; the server must keep serving, and the latency of benign
requests sent alongside must hold. The tiny model decodes a few tokens in milliseconds, so
the times measured are the server's own.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import statistics
import threading
import time
from typing import Any

import httpx
import pytest
from test_serve import running_server

pytestmark = pytest.mark.slow

API_KEY = "abuse-key-456"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUICK_S = 2.0  # the most any refusal may take, measured from the client


@pytest.fixture(scope="module")
def guarded(tiny_model_dir, structune_home, tmp_path_factory):
    """A tiny-model server with an API key; yields (url, model name)."""
    env = {**os.environ, "STRUCTUNE_HOME": str(structune_home), "STRUCTUNE_API_KEY": API_KEY}
    log = tmp_path_factory.mktemp("abuse-serve") / "stderr.log"
    flags = ["--base", str(tiny_model_dir), "--max-tokens", "16"]
    with running_server(*flags, env=env, log=log) as url:
        model = str(tiny_model_dir)
        assert benign(url, model).status_code == 200  # loads the model, compiles the schema
        yield url, model


VERDICT = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def benign(url: str, model: str) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Is water wet?"}],
        "max_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": {"schema": VERDICT}},
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)


def timed_post(url: str, content: bytes) -> tuple[httpx.Response, float]:
    headers = {**AUTH, "Content-Type": "application/json"}
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/chat/completions", content=content, headers=headers, timeout=60
    )
    return response, time.perf_counter() - started


def assert_refused_quickly(response: httpx.Response, seconds: float) -> None:
    assert 400 <= response.status_code < 500, response.text[:500]
    error = response.json()["error"]  # OpenAI's error format
    assert error["message"] and error["code"] == response.status_code
    assert seconds < QUICK_S


# --- 1. The API key guards every route but /health ---------------------------------------

GUARDED_ROUTES = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/no/such/route"),
    ("HEAD", "/v1/models"),
    ("OPTIONS", "/v1/chat/completions"),
    ("DELETE", "/v1/models"),
    ("PUT", "/v1/chat/completions"),
    ("GET", "/health/../v1/models"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED_ROUTES)
@pytest.mark.parametrize("key", [None, "wrong", API_KEY.upper(), f"{API_KEY}x"])
def test_every_route_but_health_needs_the_key(guarded, method, path, key):
    url, _ = guarded
    headers = {"Content-Length": "0"} | ({"Authorization": f"Bearer {key}"} if key else {})
    response = httpx.request(method, f"{url}{path}", headers=headers, timeout=10)
    assert response.status_code == 401
    if method != "HEAD":
        assert response.json()["error"]["type"] == "authentication_error"


def test_health_stays_open_and_the_key_opens_the_rest(guarded):
    url, _ = guarded
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/openapi.json", headers=AUTH).status_code == 200
    unknown = httpx.get(f"{url}/no/such/route", headers=AUTH)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    wrong_method = httpx.delete(f"{url}/v1/models", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]


# --- 2. Malformed bodies and absurd limits -------------------------------------------------


def chat_body(**fields: str) -> bytes:
    """A chat request as raw JSON text, with some fields replaced by raw JSON values (so
    that NaN, 1e400 and other things `json.dumps` would not write can be sent)."""
    values = {
        "model": '"MODEL"',
        "messages": '[{"role": "user", "content": "hi"}]',
        "max_tokens": "8",
        **fields,
    }
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}").encode()


MALFORMED_BODIES = {
    "not json": b"{nope",
    "empty": b"",
    "a bare list": b"[]",
    "a string": b'"hi"',
    "100k nested lists": b"[" * 100_000 + b"]" * 100_000,
    "100k nested objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "schema nested 900 deep": chat_body(
        response_format='{"type": "json_schema", "json_schema": {"schema": '
        + '{"a":' * 900
        + "1"
        + "}" * 900
        + "}}"
    ),
    "invalid utf-8": b'{"model": "\xff\xfe"}',
    "max_tokens -1": chat_body(max_tokens="-1"),
    "max_tokens 0": chat_body(max_tokens="0"),
    "max_tokens 10**12": chat_body(max_tokens=str(10**12)),
    "max_tokens 10**400": chat_body(max_tokens="1" + "0" * 400),
    "max_tokens 1e400": chat_body(max_tokens="1e400"),
    "max_tokens a string": chat_body(max_tokens='"eight"'),
    "max_completion_tokens -5": chat_body(max_completion_tokens="-5"),
    "n huge": chat_body(n=str(10**12)),
    "n negative": chat_body(n="-3"),
    "n zero": chat_body(n="0"),
    "temperature NaN": chat_body(temperature="NaN"),
    "temperature Infinity": chat_body(temperature="Infinity"),
    "temperature -Infinity": chat_body(temperature="-Infinity"),
    "temperature negative": chat_body(temperature="-0.5"),
    "temperature 1e400": chat_body(temperature="1e400"),
    "temperature a list": chat_body(temperature="[1]"),
    "stream true": chat_body(stream="true"),
    "model a number": chat_body(model="12"),
    "model unknown": chat_body(model='"gpt-4"'),
    "messages empty": chat_body(messages="[]"),
    "messages an object": chat_body(messages='{"role": "user"}'),
    "message role unknown": chat_body(messages='[{"role": "tool", "content": "x"}]'),
    "message content null": chat_body(messages='[{"role": "user", "content": null}]'),
    "10k messages": chat_body(
        messages="[" + ", ".join(['{"role": "user", "content": "hi"}'] * 10_000) + "]"
    ),
    "one huge message": chat_body(
        messages='[{"role": "user", "content": "' + "word " * 150_000 + '"}]'
    ),
    "response_format a string": chat_body(response_format='"json"'),
    "response_format unknown type": chat_body(response_format='{"type": "xml"}'),
    "response_format schema a list": chat_body(
        response_format='{"type": "json_schema", "json_schema": {"schema": []}}'
    ),
    "response_format schema missing": chat_body(
        response_format='{"type": "json_schema", "json_schema": {}}'
    ),
}


@pytest.mark.parametrize("name", MALFORMED_BODIES)
def test_malformed_bodies_and_absurd_limits_are_refused_quickly(guarded, name):
    url, model = guarded
    response, seconds = timed_post(url, MALFORMED_BODIES[name].replace(b"MODEL", model.encode()))
    print(f"\n{name}: {response.status_code} in {seconds:.2f} s: {response.text[:120]}")
    assert_refused_quickly(response, seconds)
    assert benign(url, model).status_code == 200  # still serving


# --- 2b. Pathological schemas --------------------------------------------------------------


def nested_objects(levels: int) -> str:
    """As JSON text: too deep for `json.dumps`, which recurses."""
    return '{"type": "object", "required": ["a"], "properties": {"a": ' * levels + (
        '{"type": "string"}' + "}}" * levels
    )


def nested_arrays(levels: int) -> str:
    return '{"type": "array", "items": ' * levels + '{"type": "string"}' + "}" * levels


def pattern(regex: str) -> dict[str, Any]:
    return {"type": "string", "pattern": regex}


def many_properties(count: int, *, required: bool) -> dict[str, Any]:
    names = [f"p{i}" for i in range(count)]
    schema = {"type": "object", "properties": {n: {"type": "integer"} for n in names}}
    return schema | ({"required": names} if required else {})


def doubling_any_of(levels: int) -> dict[str, Any]:
    """Each level refers twice to the one below: 2**levels paths, in a few kB."""
    defs: dict[str, Any] = {"L0": {"type": "integer"}}
    for i in range(1, levels + 1):
        below = {"$ref": f"#/$defs/L{i - 1}"}
        defs[f"L{i}"] = {"anyOf": [below, {"type": "array", "items": below}]}
    return {"$defs": defs, "$ref": f"#/$defs/L{levels}"}


def all_of_any_ofs(count: int) -> dict[str, Any]:
    """allOf of `count` two-way anyOfs: llguidance intersects them, 2**count branches."""
    return {
        "type": "object",
        "allOf": [
            {
                "anyOf": [
                    {"properties": {f"a{i}": {"type": "integer"}}, "required": [f"a{i}"]},
                    {"properties": {f"b{i}": {"type": "string"}}, "required": [f"b{i}"]},
                ]
            }
            for i in range(count)
        ],
    }


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def object_with(name: str, value: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {name: value}, "required": [name]}


def schema_request(model: str, schema: dict[str, Any] | str) -> bytes:
    """A chat request asking for `schema` (a dict, or JSON text), as JSON text."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return chat_body(
        model=json.dumps(model),
        response_format='{"type": "json_schema", "json_schema": {"name": "x", "schema": '
        + text
        + "}}",
    )


PATHOLOGICAL_SCHEMAS: dict[str, Any] = {
    "objects nested 1,000 deep": nested_objects(1_000),
    "arrays nested 5,000 deep": nested_arrays(5_000),
    "objects nested 30 deep (fine)": nested_objects(30),
    "$ref to itself": {"$ref": "#"},
    "$ref to itself, required, no base case": object_with("a", {"$ref": "#"}),
    "$refs to each other": {"$defs": {"A": ref("B"), "B": ref("A")}, "$ref": "#/$defs/A"},
    "objects requiring each other": {
        "$defs": {"A": object_with("b", ref("B")), "B": object_with("a", ref("A"))},
        "$ref": "#/$defs/A",
    },
    "$ref to a missing definition": {"$ref": "#/$defs/nowhere"},
    "$ref to another document": {"$ref": "https://example.com/schema.json"},
    "a tree through $ref (fine)": {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}},
    },
    "enum of 60k values": {"enum": [f"value-{i}" for i in range(60_000)]},
    "enum of 2 very long strings": {"enum": ["x" * 300_000, "y" * 300_000]},
    "pattern ^(a+)+$": pattern("^(a+)+$"),
    "pattern ^(a|aa)*b$": pattern("^(a|aa)*b$"),
    "pattern (x+x+)+y": pattern("(x+x+)+y"),
    "pattern a{1000000}": pattern("^a{1000000}$"),
    "pattern (a{1000}){1000}": pattern("^(a{1000}){1000}$"),
    "pattern ((a{100}){100}){100}": pattern("^((a{100}){100}){100}$"),
    "pattern [ab]*a[ab]{40}": pattern("^[ab]*a[ab]{40}$"),
    "pattern that is not a regex": pattern("^(a$"),
    "minItems 10**9": {"type": "array", "items": {"type": "integer"}, "minItems": 10**9},
    "maxItems 10**9": {"type": "array", "items": {"type": "integer"}, "maxItems": 10**9},
    "minLength 10**9": {"type": "string", "minLength": 10**9},
    "maxLength 10**9": {"type": "string", "maxLength": 10**9},
    "minLength = maxLength = 10**9": {"type": "string", "minLength": 10**9, "maxLength": 10**9},
    "minLength over maxLength": {"type": "string", "minLength": 5, "maxLength": 1},
    "minimum 1e308, multipleOf 1e-300": {"type": "number", "minimum": 1e308, "multipleOf": 1e-300},
    "5,000 required properties": many_properties(5_000, required=True),
    "5,000 optional properties": many_properties(5_000, required=False),
    "1,000 optional properties (fine)": many_properties(1_000, required=False),
    "anyOf doubling 40 levels through $ref": doubling_any_of(40),
    "allOf of 20 two-way anyOfs": all_of_any_ofs(20),
    "anyOf of 200 objects of 5 anyOfs": {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    f"k{j}": {"anyOf": [{"type": "integer"}, pattern(f"^{i}-{j}[a-z]*$")]}
                    for j in range(5)
                },
                "required": [f"k{j}" for j in range(5)],
            }
            for i in range(200)
        ]
    },
    "oneOf of 300 objects": {"oneOf": [object_with("t", {"const": i}) for i in range(300)]},
}


@pytest.mark.parametrize("name", PATHOLOGICAL_SCHEMAS)
def test_pathological_schemas_are_refused_or_served_quickly(guarded, name):
    url, model = guarded
    response, seconds = timed_post(url, schema_request(model, PATHOLOGICAL_SCHEMAS[name]))
    print(f"\n{name}: {response.status_code} in {seconds:.2f} s: {response.text[:160]}")
    if response.status_code == 200:  # compiled: then it also decodes, within the same time
        assert response.json()["choices"][0]["message"]["content"] is not None
        assert seconds < QUICK_S
    else:
        assert response.status_code == 400
        assert_refused_quickly(response, seconds)
    assert benign(url, model).status_code == 200  # still serving


# --- 3. Benign latency while another client attacks --------------------------------------


def fresh_costly_schemas() -> Any:
    """Schemas that each cost the engine real work (new every time: no cache helps)."""
    for i in itertools.count():
        yield pattern(f"^(a{{{1000 + i}}}){{1000}}$")
        yield many_properties(1_000 - i % 100, required=False)
        yield {"enum": [f"v{i}-{j}" for j in range(60_000)]}
        yield nested_objects(1_000 + i)


def p50_of_benign(url: str, model: str, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert benign(url, model).status_code == 200
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_benign_latency_holds_while_another_client_attacks(guarded):
    url, model = guarded
    alone = p50_of_benign(url, model, 20)

    stop = threading.Event()
    statuses: list[int] = []

    def attack() -> None:
        for schema in fresh_costly_schemas():
            if stop.is_set():
                return
            response, _ = timed_post(url, schema_request(model, schema))
            statuses.append(response.status_code)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        attackers = [pool.submit(attack) for _ in range(2)]
        time.sleep(0.5)  # let the attack get going
        under_attack = p50_of_benign(url, model, 20)
        stop.set()
        for attacker in attackers:
            attacker.result()

    print(
        f"\nbenign p50 alone {alone * 1000:.0f} ms, under attack {under_attack * 1000:.0f} ms "
        f"({len(statuses)} attacking requests: {sorted(set(statuses))})"
    )
    assert statuses and all(s < 500 for s in statuses)
    assert under_attack <= 2 * alone + 0.25


# --- 4. Requests generated from the server's own OpenAPI schema ----------------------------


@pytest.fixture(scope="module")
def openapi(guarded):
    import schemathesis

    url, _ = guarded
    return schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)


def test_requests_generated_from_the_openapi_schema_never_get_a_5xx(openapi):
    statuses: list[int] = []
    for result in openapi.get_all_operations():
        check_operation(result.ok(), statuses)
    print(f"\n{len(statuses)} generated requests, statuses {sorted(set(statuses))}")
    assert len(statuses) >= 60


def check_operation(operation: Any, statuses: list[int]) -> None:
    from hypothesis import HealthCheck, given, settings

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        response = case.call(headers=AUTH, timeout=30)
        statuses.append(response.status_code)
        assert response.status_code < 500, f"{operation.label}: {response.text[:300]}"

    call()
