"""`structune serve` as a real process on 127.0.0.1, driven by the official openai client."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pydantic
import pytest

from structune import DatasetStore, OpenAICompatibleLLM, TrainConfig, finetune
from structune.record import record
from structune.tasks.albums import album_program, curated_conversations

pytestmark = pytest.mark.slow

API_KEY = "test-key-123"


class Verdict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    ok: bool


@contextlib.contextmanager
def running_server(*flags: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """`structune serve FLAGS` on a free port of 127.0.0.1, stderr into `log`; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "structune.cli", "serve", "--port", str(port), *flags]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
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
        pytest.fail(f"structune serve did not start: {log.read_text()[-2000:]}")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(structune_home, tmp_path_factory):
    env = {**os.environ, "STRUCTUNE_HOME": str(structune_home), "STRUCTUNE_API_KEY": API_KEY}
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with running_server("--max-tokens", "256", env=env, log=log) as url:
        yield url


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
        *(
            (
                {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], **bad},
                400,
                field,
            )
            for bad, field in [
                ({"top_p": 0}, "top_p"),
                ({"top_p": 1.5}, "top_p"),
                ({"seed": -1}, "seed"),
                ({"repetition_penalty": 0}, "repetition_penalty"),
                ({"temperature": 2.5}, "temperature"),
            ]
        ),
        (
            {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "array", "uniqueItems": True}},
                },
            },
            400,
            "no grammar can enforce uniqueItems",
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


def test_a_seeded_request_repeats_its_sampled_answer(client):
    def sampled(seed: int) -> str:
        completion = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Write one sentence about the sea."}],
            max_tokens=12,
            temperature=1.0,
            top_p=0.95,
            seed=seed,
            extra_body={"repetition_penalty": 1.1},
        )
        return completion.choices[0].message.content

    # Sent together, they wait together while the first decodes; each still decodes alone
    # (in one batch the rows would share the random draws and part ways).
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(sampled, [3] * 4))
    assert len(set(answers)) == 1, answers
    assert sampled(3) == answers[0]


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


# Overload and disconnects, against a server on the tiny random model: it almost never
# ends its answer by itself, so a request decodes for exactly its max_tokens and the test,
# not the model, decides how long the server stays busy.
LONG = 1800  # tokens: tens of seconds of decoding here, cut short by each test


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir, structune_home, tmp_path_factory):
    env = {**os.environ, "STRUCTUNE_HOME": str(structune_home)}
    env.pop("STRUCTUNE_API_KEY", None)
    log = tmp_path_factory.mktemp("tiny-serve") / "stderr.log"
    flags = ["--base", str(tiny_model_dir), "--max-tokens", "1900"]
    with running_server(*flags, "--max-batch", "2", "--max-queue", "2", env=env, log=log) as url:
        # Load the model and compile the schema before timing anything.
        ask(url, str(tiny_model_dir), max_tokens=4, schema=True)
        yield url, str(tiny_model_dir), log


def ask(url: str, model: str, *, max_tokens: int, schema: bool = False) -> httpx.Response:
    body: dict = {
        "model": model,
        "messages": [{"role": "user", "content": "Is water wet?"}],
        "max_tokens": max_tokens,
    }
    if schema:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "v", "schema": Verdict.model_json_schema()},
        }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def ask_and_hold(url: str, model: str, *, max_tokens: int) -> socket.socket:
    """Send a chat request on a raw connection and return it unread: closing it is a
    client that goes away."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Count."}],
            "max_tokens": max_tokens,
        }
    ).encode()
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
    )
    return connection


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()


def wait_for(url: str, condition, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(state := health(url)):
        if time.monotonic() > deadline:
            pytest.fail(f"server state never met the condition: {state}")
        time.sleep(0.05)
    return state


def test_a_full_queue_is_answered_503_at_once_and_the_rest_are_served(tiny_server):
    url, model, _ = tiny_server
    before = health(url)
    blocker = ask_and_hold(url, model, max_tokens=LONG)
    wait_for(url, lambda h: h["running"] == 1)

    def timed() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        return ask(url, model, max_tokens=32, schema=True), time.monotonic() - started

    # With one request decoding, two may wait (--max-queue 2); the other six are refused.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(timed) for _ in range(8)]
        state = wait_for(url, lambda h: h["rejected"] - before["rejected"] == 6)
        assert state["waiting"] == 2
        blocker.close()  # frees the decoder: the two waiting requests run now
        answers = [f.result() for f in futures]

    refused = [(r, s) for r, s in answers if r.status_code == 503]
    served = [r for r, _ in answers if r.status_code == 200]
    assert len(refused) == 6 and len(served) == 2
    for response, seconds in refused:
        assert seconds < 5  # answered without waiting for the decoder
        assert int(response.headers["Retry-After"]) >= 1
        error = response.json()["error"]
        assert error["type"] == "server_error" and "retry after" in error["message"]
    for response in served:
        completion = openai.types.chat.ChatCompletion.model_validate(response.json())
        Verdict.model_validate_json(completion.choices[0].message.content)
    assert ask(url, model, max_tokens=4).status_code == 200  # still serving


def test_a_client_that_leaves_cancels_its_request(tiny_server):
    url, model, log = tiny_server
    before = health(url)
    running = ask_and_hold(url, model, max_tokens=LONG)
    wait_for(url, lambda h: h["running"] == 1)
    queued = ask_and_hold(url, model, max_tokens=LONG - 1)  # another key: waits for a batch
    wait_for(url, lambda h: h["waiting"] == 1)

    queued.close()
    state = wait_for(url, lambda h: h["cancelled"] - before["cancelled"] == 1)
    assert state["waiting"] == 0 and state["running"] == 1  # dropped before it started

    running.close()
    left = time.monotonic()
    state = wait_for(url, lambda h: h["running"] == 0)
    assert state["cancelled"] - before["cancelled"] == 2
    assert ask(url, model, max_tokens=4).status_code == 200
    assert time.monotonic() - left < 10  # a full decode of LONG tokens takes far longer
    assert "stopped decoding a batch of 1" in log.read_text()


def test_an_adapter_hears_its_training_system_prompt_when_a_request_sends_none(tiny_server):
    url, base, _ = tiny_server
    config = TrainConfig(max_steps=1, batch_size=2, lora_r=4)
    adapter = finetune(curated_conversations(2), base=base, config=config, progress=False)
    assert adapter.system_prompt == album_program.system_prompt
    user = album_program.messages({"movie_name": "Heat"})[1:]

    def served(messages: list[dict[str, str]]) -> dict:
        body = {"model": adapter.id, "messages": messages, "max_tokens": 8}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    bare = served(user)
    trained = served([{"role": "system", "content": adapter.system_prompt}, *user])
    own = served([{"role": "system", "content": "Be brief."}, *user])
    # The bare request decodes from the training conversation's prompt, token for token;
    # without the adapter's system prompt the chat template would put in SmolLM's own.
    assert bare["usage"]["prompt_tokens"] == trained["usage"]["prompt_tokens"]
    assert bare["choices"][0]["message"]["content"] == trained["choices"][0]["message"]["content"]
    assert own["usage"]["prompt_tokens"] != trained["usage"]["prompt_tokens"]  # kept its own
