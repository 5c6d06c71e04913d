"""`structune serve` as a real process on 127.0.0.1, driven by the official openai client."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pydantic
import pytest

from structune import DatasetStore, OpenAICompatibleLLM
from structune.record import record
from structune.tasks.albums import album_program

pytestmark = pytest.mark.slow

API_KEY = "test-key-123"


class Verdict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    ok: bool


@pytest.fixture(scope="module")
def server(structune_home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "STRUCTUNE_HOME": str(structune_home), "STRUCTUNE_API_KEY": API_KEY}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "structune.cli",
            "serve",
            "--port",
            str(port),
            "--max-tokens",
            "256",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"structune serve did not start: {process.stderr.read()[-2000:]}")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)


def test_models_lists_the_base(client):
    assert "smollm2-135m" in [m.id for m in client.models.list()]


def test_parse_with_a_pydantic_model_is_enforced(client):
    completion = client.chat.completions.parse(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Is water wet?"}],
        response_format=Verdict,
        max_tokens=32,
    )
    assert isinstance(completion.choices[0].message.parsed, Verdict)
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0


def test_json_object_mode_gives_a_json_object(client):
    completion = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Give me a JSON object with a key a."}],
        response_format={"type": "json_object"},
        max_tokens=64,
    )
    choice = completion.choices[0]
    assert choice.message.content.startswith("{")  # the grammar's first token, cut off or not
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)


def test_concurrent_requests_are_all_answered(client):
    def ask(i: int) -> str:
        return (
            client.chat.completions.create(
                model="smollm2-135m",
                messages=[{"role": "user", "content": f"Is {i} even? Answer in JSON."}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "v", "schema": Verdict.model_json_schema()},
                },
                max_tokens=32,
            )
            .choices[0]
            .message.content
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert all(Verdict.model_validate_json(a) for a in answers)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "not found"),
        (
            {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "n": 2},
            400,
            "n must be 1",
        ),
        (
            {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 10**6,
            },
            400,
            "cap",
        ),
        (
            {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": -1,
            },
            400,
            "max_tokens",
        ),
        ({"model": "smollm2-135m", "messages": []}, 400, "messages"),
        (
            {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"not": {"type": "string"}}},
                },
            },
            400,
            "cannot enforce",
        ),
    ],
)
def test_bad_requests_are_4xx_with_a_message(server, body, status, says):
    response = httpx.post(
        f"{server}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert response.status_code == status
    assert says in response.json()["error"]["message"]


def test_malformed_json_and_huge_bodies_are_refused(server):
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    bad = httpx.post(f"{server}/v1/chat/completions", content=b"{nope", headers=headers)
    assert bad.status_code == 400
    huge = httpx.post(f"{server}/v1/chat/completions", content=b"x" * 2_000_000, headers=headers)
    assert huge.status_code == 413
    assert httpx.get(f"{server}/health").status_code == 200  # still serving


def test_api_key_is_required_except_for_health(server):
    assert httpx.get(f"{server}/v1/models").status_code == 401
    wrong = httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    assert httpx.get(f"{server}/health").status_code == 200


def test_structune_records_a_dataset_from_its_own_server(server, tmp_path):
    teacher = OpenAICompatibleLLM("smollm2-135m", base_url=f"{server}/v1", api_key=API_KEY)
    with DatasetStore(tmp_path / "d.sqlite") as store:
        summary = record(
            album_program,
            teacher,
            [{"movie_name": "Heat"}],
            store=store,
            max_tokens=16,
            progress=False,
        )
        assert summary.recorded == 1
        (example,) = store.examples()
        assert example.teacher == "openai:smollm2-135m" and example.completion_tokens


def test_a_body_without_content_length_is_refused(server):
    def chunks():
        yield b'{"model": "smollm2-135m", '
        yield b'"messages": [{"role": "user", "content": "hi"}]}'

    response = httpx.post(
        f"{server}/v1/chat/completions",
        content=chunks(),
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 411


def test_a_non_object_json_schema_is_a_400(server):
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": "x"},
    }
    response = httpx.post(
        f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 400
