"""Decoding options on the real bundled SmolLM2, through transformers and llama.cpp, and as
the OpenAI-compatible client sends them to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pydantic
import pytest

from structune import OpenAICompatibleLLM, Program, Sampling
from structune.llms.local import LocalLLM
from structune.models.loading import builtin_gguf_path

pytestmark = pytest.mark.slow

SEA = [{"role": "user", "content": "Write one sentence about the sea."}]
RAINBOW = [{"role": "user", "content": "List the colours of the rainbow."}]


class Album(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    title: str
    year: int = pydantic.Field(ge=1900, le=2030)
    tracks: list[str] = pydantic.Field(min_length=1, max_length=3)


@pytest.fixture(scope="module")
def smollm2() -> LocalLLM:
    return LocalLLM.load("smollm2-135m", dtype="float32", batch_size=4)


def test_a_seed_repeats_a_sampled_answer_and_other_seeds_differ(smollm2):
    def sampled(seed: int) -> str:
        return smollm2.complete(
            SEA, max_tokens=12, sampling=Sampling(temperature=1.0, seed=seed)
        ).text

    assert sampled(3) == sampled(3)
    assert len({sampled(seed) for seed in range(3)}) > 1


def test_sampled_answers_under_a_schema_still_validate(smollm2):
    program = Program("Invent an album called {name}.", Album)
    prompts = [program.messages({"name": name}) for name in ["Blue", "Tide", "Salt", "Ash"]]
    sampling = Sampling(temperature=1.5, top_p=0.95, seed=7, repetition_penalty=1.3)
    completions = smollm2.complete_many(
        prompts, max_tokens=96, sampling=sampling, json_schema=program.json_schema
    )
    finished = [c for c in completions if c.finish_reason == "stop"]
    assert finished, [c.text for c in completions]
    for completion in finished:
        jsonschema.validate(json.loads(completion.text), program.json_schema)


def test_program_run_samples_and_still_validates(smollm2):
    program = Program("Invent an album called {name}.", Album)
    album = program.run(
        smollm2,
        {"name": "Blue"},
        max_tokens=128,
        sampling=Sampling(temperature=1.0, seed=1),
        constrained=True,
    )
    assert isinstance(album, Album)


def test_a_repetition_penalty_changes_a_greedy_answer(smollm2):
    greedy = smollm2.complete(RAINBOW, max_tokens=24).text
    penalised = smollm2.complete(RAINBOW, max_tokens=24, sampling=Sampling(repetition_penalty=1.5))
    assert penalised.text != greedy
    assert smollm2.complete(RAINBOW, max_tokens=24).text == greedy  # greedy stays greedy


def test_llama_cpp_seeds_and_holds_sampled_answers_to_the_schema():
    from structune.llms.llama_cpp import LlamaCppLLM

    llm = LlamaCppLLM(builtin_gguf_path("smollm2-135m"), n_ctx=1024, n_threads=2)

    def sampled(seed: int) -> str:
        sampling = Sampling(temperature=1.0, top_p=0.9, seed=seed, repetition_penalty=1.1)
        return llm.complete(SEA, max_tokens=8, sampling=sampling).text

    first = sampled(5)  # the prompt is then in llama.cpp's cache: the seed still repeats
    assert sampled(5) == first
    assert sampled(6) != first
    # llama.cpp's grammar takes seconds a token here: one short schema
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Is water wet? Answer in JSON."}]
    sampling = Sampling(temperature=1.5, seed=2, repetition_penalty=1.2)
    completion = llm.complete(messages, max_tokens=12, sampling=sampling, json_schema=schema)
    jsonschema.validate(json.loads(completion.text), schema)


class RecordingServer:
    """A real HTTP server that answers every chat request with `{}` and keeps its body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.bodies.append(
                    json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )
                data = json.dumps(
                    {"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_the_openai_client_sends_the_options_in_openai_names():
    server = RecordingServer()
    try:
        llm = OpenAICompatibleLLM("m", base_url=server.url, api_key="k")
        llm.complete(SEA)
        llm.complete(SEA, sampling=Sampling(temperature=0.7, top_p=0.9, seed=4))
        llm.complete(SEA, sampling=Sampling(repetition_penalty=1.2))
    finally:
        server.httpd.shutdown()
    greedy, seeded, penalised = server.bodies
    assert (greedy["temperature"], greedy["top_p"]) == (0.0, 1.0)
    assert "seed" not in greedy and "repetition_penalty" not in greedy  # not OpenAI's field
    assert (seeded["temperature"], seeded["top_p"], seeded["seed"]) == (0.7, 0.9, 4)
    assert penalised["repetition_penalty"] == 1.2
