"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1: llama-cpp-python's
OpenAI-compatible server with the bundled GGUF, and small stdlib servers that answer
with the failure statuses that real APIs send."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from structune import BackendError, DatasetStore, OpenAICompatibleLLM, UserError
from structune.models.loading import builtin_gguf_path
from structune.record import record
from structune.tasks.albums import album_program

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(builtin_gguf_path("smollm2-135m")),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("llama_cpp.server did not start within 120 s")
    yield base_url
    process.terminate()
    process.wait(timeout=30)


def test_completes_against_a_real_openai_compatible_server(llama_server):
    llm = OpenAICompatibleLLM("smollm2", base_url=llama_server, api_key="unused")
    messages = [{"role": "user", "content": "Say hello in one word."}]
    completion = llm.complete(messages, max_tokens=16)
    assert completion.text.strip()
    assert completion.prompt_tokens and completion.completion_tokens
    assert completion.finish_reason in ("stop", "length")


def test_records_a_dataset_from_the_server(llama_server, tmp_path):
    llm = OpenAICompatibleLLM("smollm2", base_url=llama_server)
    with DatasetStore(tmp_path / "d.sqlite") as store:
        inputs = [{"movie_name": "Heat"}, {"movie_name": "Alien"}]
        summary = record(album_program, llm, inputs, store=store, max_tokens=48, progress=False)
        assert summary.recorded == 2
        examples = store.examples("album")
        assert {e.teacher for e in examples} == {"openai:smollm2"}
        assert all(e.completion and e.completion_tokens for e in examples)
        # 48 tokens cannot hold a whole album: recorded, flagged, not lost.
        assert all(not e.valid and "truncated" in (e.error or "") for e in examples)


def test_a_down_endpoint_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAICompatibleLLM("m", base_url=url, max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match=f"cannot reach {url}/chat/completions"):
        llm.complete([{"role": "user", "content": "hi"}])


class ScriptedServer:
    """A real HTTP server that answers each request with the next scripted status."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None):
        self.statuses = list(statuses)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.requests += 1
                status = server.statuses.pop(0)
                body = {"error": {"message": "scripted"}}
                if status == 200:
                    body = {
                        "choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                    }
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.mark.parametrize(
    ("statuses", "expect", "requests"),
    [
        ([503, 429, 200], None, 3),
        ([500, 502, 503], BackendError, 3),
        ([401], UserError, 1),
        ([400], BackendError, 1),
    ],
)
def test_retries_transient_failures_only(statuses, expect, requests):
    server = ScriptedServer(statuses, headers={"Retry-After": "0"})
    llm = OpenAICompatibleLLM("m", base_url=server.url, api_key="k", max_retries=2, backoff_s=0.01)
    try:
        if expect is None:
            assert llm.complete([{"role": "user", "content": "hi"}]).completion_tokens == 1
        else:
            with pytest.raises(expect):
                llm.complete([{"role": "user", "content": "hi"}])
        assert server.requests == requests
    finally:
        server.close()


def test_retry_after_is_honoured():
    server = ScriptedServer([429, 200], headers={"Retry-After": "1"})
    llm = OpenAICompatibleLLM("m", base_url=server.url, max_retries=2, backoff_s=0.01)
    started = time.monotonic()
    try:
        llm.complete([{"role": "user", "content": "hi"}])
    finally:
        server.close()
    assert time.monotonic() - started >= 1.0


def test_a_schema_goes_to_the_server_as_response_format(llama_server):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    llm = OpenAICompatibleLLM("smollm2", base_url=llama_server, schema_style="json_object")
    messages = [{"role": "user", "content": "Is water wet? Answer in JSON."}]
    completion = llm.complete(messages, max_tokens=32, json_schema=schema)
    assert set(json.loads(completion.text)) == {"ok"}
