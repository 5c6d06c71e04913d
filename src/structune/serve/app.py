"""The OpenAI-compatible server: `GET /v1/models`, `POST /v1/chat/completions`, `GET /health`.

`model` names the base model or any adapter id. `response_format` of type `json_schema`
(or `json_object`, optionally with a `schema`) is enforced by constrained decoding, on the
path `Program.run(constrained=True)` takes (`structune.constrain.checked`): a schema the
engine cannot enforce is a 400, never decoded unconstrained, unless the schema asks to be
relaxed (`"x-structune-relax": true`); each answer is checked against the full schema, a
response's `schema_check` says what the grammar enforced and what was only checked, and an
answer that still violates the schema after re-sampling is a 500 with the validator's
message, never a valid-looking answer. Limits (body size, `max_tokens`, `n`, streaming)
are checked before any work and answered with a 4xx in OpenAI's error format, and so is
every error the framework raises itself (unknown route, wrong method, a body that does not
parse). With an API key set, every route but `/health` needs it, `/openapi.json` included.

A request costs what its prompt and schema cost, so both are bounded before it queues: a
prompt that does not fit the model's context window is a 400, and so is a schema that
compiles past the engine's limits (`structune.constrain.grammar`) or past
`ServeLimits.compile_timeout_s`.

A full queue is answered 503 with `Retry-After` at once (`Batcher`). A client that
disconnects before its answer is ready cancels its request: it leaves the queue, and a
batch left without callers stops decoding. `/health` reports the queue and these counts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeVar

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from structune.constrain.checked import SchemaCheck
from structune.errors import StructuneError, UserError
from structune.llms.base import LLM
from structune.llms.sampling import MAX_SEED, MAX_TEMPERATURE, Sampling
from structune.messages import Message
from structune.program import schema_hash
from structune.serve.batching import Batcher, QueueFull

log = logging.getLogger(__name__)

T = TypeVar("T")

# Any JSON object: what `{"type": "json_object"}` without a schema asks for.
ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 1_000_000
    max_tokens: int = 1024
    max_batch: int = 8
    max_queue: int | None = None  # requests waiting to decode; None: QUEUED_BATCHES x max_batch
    compile_timeout_s: float = 5.0  # a new schema's compile, waited for at most this long


class ChatMessage(pydantic.BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(pydantic.BaseModel):
    model: str
    messages: list[ChatMessage] = pydantic.Field(min_length=1)
    max_tokens: int | None = pydantic.Field(default=None, ge=1)
    max_completion_tokens: int | None = pydantic.Field(default=None, ge=1)
    temperature: float = pydantic.Field(default=0.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = pydantic.Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = pydantic.Field(default=None, ge=0, le=MAX_SEED)
    # not an OpenAI field; vLLM's and llama.cpp's servers take it too
    repetition_penalty: float = pydantic.Field(default=1.0, gt=0.0, allow_inf_nan=False)
    n: int = 1
    stream: bool = False
    response_format: dict[str, Any] | None = None

    def sampling(self) -> Sampling:
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty,
        )


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        self.status, self.message, self.kind = status, message, kind


def create_app(
    *,
    base: str = "smollm2-135m",
    api_key: str | None = None,
    limits: ServeLimits | None = None,
    preload: bool = False,
) -> FastAPI:
    """Build the app; models load on their first request and stay loaded.

    With `preload`, the base model loads now and every adapter is checked (its manifest,
    weights and base), so a server that starts can answer: a bad base is an error here,
    not a 500 on the first request, and a broken adapter is left out with a warning.
    """
    limits = limits or ServeLimits()
    models = _ModelPool(base)
    if preload:
        models.preload()
    batcher = Batcher(models.get, max_batch=limits.max_batch, max_queue=limits.max_queue)
    # Schema compiles run in native code that cannot be interrupted: the engine's limits
    # bound them, and as a backstop for a cost those miss a request waits at most
    # `compile_timeout_s`. One compile at a time, on its own thread: a runaway compile then
    # holds one core and this one thread, never the decode threads or the event loop.
    compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schema-compile")
    app = FastAPI(title="structune", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None:  # chunked bodies could be unbounded
            return _error(411, "send a Content-Length header")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return _error(413, f"request body over {limits.max_body_bytes} bytes")
        if api_key and request.url.path != "/health":
            sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(sent.encode(), api_key.encode()):
                return _error(
                    401,
                    "missing or wrong API key (Authorization: Bearer ...)",
                    "authentication_error",
                )
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    @app.exception_handler(QueueFull)
    async def overloaded(request: Request, exc: QueueFull) -> JSONResponse:
        return _error(503, str(exc), "server_error", {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}", "server_error")

    @app.exception_handler(HTTPException)
    async def framework_error(request: Request, exc: HTTPException) -> JSONResponse:
        # unknown routes, wrong methods, bodies that do not parse (nested too deep for json)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(400, f"{where}: {first['msg']}" if where else first["msg"])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **batcher.stats()}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "owned_by": "structune"} for name in models.names()
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any]:
        if body.n != 1:
            raise ApiError(400, "n must be 1: structune answers one choice per request")
        if body.stream:
            raise ApiError(400, "stream=true is not supported; send stream=false")
        if body.model not in models.names():
            raise ApiError(
                404, f"model {body.model!r} not found; GET /v1/models lists them", "not_found_error"
            )
        max_tokens = body.max_completion_tokens or body.max_tokens or limits.max_tokens
        if max_tokens > limits.max_tokens:
            raise ApiError(
                400, f"max_tokens {max_tokens} is over this server's cap of {limits.max_tokens}"
            )
        schema = _schema_of(body.response_format)
        batcher.refuse_if_full()  # before compiling the schema: an overload costs nothing
        messages: list[Message] = [{"role": m.role, "content": m.content} for m in body.messages]
        # loads the model on first use, and tokenizes: off the event loop
        llm = await asyncio.to_thread(_fitting_model, models, body.model, messages, max_tokens)
        if schema is not None:
            await _compile_within(compiler, limits.compile_timeout_s, llm, schema)
        try:
            completion = await _unless_client_leaves(
                request,
                batcher.submit(
                    body.model,
                    messages,
                    max_tokens=max_tokens,
                    sampling=body.sampling(),
                    json_schema=schema,
                    schema_key=schema_hash(schema) if schema is not None else None,
                ),
            )
        except QueueFull:  # it filled up while the schema compiled
            raise
        except UserError as exc:
            raise ApiError(400, str(exc)) from None
        except StructuneError as exc:
            raise ApiError(500, str(exc), "server_error") from None
        prompt, generated = completion.prompt_tokens or 0, completion.completion_tokens or 0
        check = completion.schema_check
        if check is not None and check.violation is not None:
            raise ApiError(
                500,
                f"the model's answer violates the schema after {check.resamples} re-samples: "
                f"{check.violation}; retry, or simplify the schema",
                "server_error",
            )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    # An answer the grammar closed as the budget ran out parses, but the
                    # budget, not the model, ended it: OpenAI's word for that is "length".
                    "finish_reason": "length"
                    if completion.closed_early
                    else completion.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": generated,
                "total_tokens": prompt + generated,
            },
            **({} if check is None else {"schema_check": _described(check)}),
        }

    return app


def _described(check: SchemaCheck) -> dict[str, Any]:
    return {
        "enforced": list(check.coverage.enforced),
        "rewritten": list(check.coverage.rewritten),
        "checked": list(check.coverage.checked),
        "resamples": check.resamples,
    }


def _schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if response_format is None or response_format.get("type") in (None, "text"):
        return None
    kind = response_format["type"]
    if kind == "json_object":
        schema = response_format.get("schema", ANY_JSON_OBJECT)
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            raise ApiError(400, "response_format.json_schema.schema is required")
    else:
        raise ApiError(
            400, f"response_format.type {kind!r} is not one of text, json_object, json_schema"
        )
    if not isinstance(schema, dict):
        raise ApiError(400, "the response_format schema must be a JSON object")
    return schema


def _fitting_model(models: _ModelPool, model: str, messages: list[Message], max_tokens: int) -> LLM:
    """The loaded model, once the prompt and `max_tokens` are known to fit its context window.

    A prompt past the window would not fail by itself: attention over it takes memory that
    grows with the square of its length, enough to take the server down.
    """
    from structune.llms.local import LocalLLM
    from structune.models.chat import tokenize_chat

    llm = models.get(model)
    if not isinstance(llm, LocalLLM) or llm.context_window is None:
        return llm
    # Rendering and tokenizing takes seconds for thousands of messages: refuse first what a
    # lower bound already rules out. A template writes at least one token per message, and
    # no token holds more characters than the vocabulary's longest.
    longest = _longest_token_chars(llm.tokenizer)
    at_least = len(messages) + sum(len(m["content"]) for m in messages) // longest
    if at_least + max_tokens > llm.context_window:
        raise _too_long(f"at least {at_least}", max_tokens, llm.context_window)
    try:
        answered = llm.with_default_system(messages)  # an adapter's system prompt counts too
        prompt = len(tokenize_chat(llm.tokenizer, answered, add_generation_prompt=True))
    except UserError as exc:
        raise ApiError(400, str(exc)) from None
    if prompt + max_tokens > llm.context_window:
        raise _too_long(str(prompt), max_tokens, llm.context_window)
    return llm


def _too_long(prompt: str, max_tokens: int, window: int) -> ApiError:
    return ApiError(
        400,
        f"the messages are {prompt} tokens, and with max_tokens {max_tokens} that is over "
        f"the model's context window of {window} tokens; shorten the messages or lower "
        "max_tokens",
    )


@lru_cache(maxsize=8)
def _longest_token_chars(tokenizer: Any) -> int:
    return max(len(token) for token in tokenizer.get_vocab())


async def _compile_within(
    compiler: ThreadPoolExecutor, seconds: float, llm: LLM, schema: dict[str, Any]
) -> None:
    """Compile now, so an unenforceable or too costly schema is a 400 before it queues."""
    from structune.constrain.grammar import cached_grammar, compile_schema
    from structune.llms.local import LocalLLM

    if not isinstance(llm, LocalLLM):
        return
    try:  # a schema compiled before skips the line for the compiler's one thread
        if await asyncio.to_thread(cached_grammar, schema, llm.tokenizer) is not None:
            return
    except UserError as exc:
        raise ApiError(400, str(exc)) from None
    work = asyncio.get_running_loop().run_in_executor(
        compiler, compile_schema, schema, llm.tokenizer
    )
    try:
        # On time-out the compile is cancelled if it has not started, else it runs on to
        # its end (native code), and a later request for the same schema finds it cached.
        await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise ApiError(
            400,
            f"the schema took longer than {seconds:g} s to compile (or waited that long for "
            "another schema's compile); simplify it and try again",
        ) from None
    except UserError as exc:
        raise ApiError(400, str(exc)) from None


async def _unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`; if the client disconnects first, cancel it and answer 499.

    uvicorn does not cancel a handler whose client left: waiting on the connection's next
    ASGI message, which after the body can only be `http.disconnect`, is how to notice.
    """
    task = asyncio.create_task(work)
    left = asyncio.create_task(_client_left(request))
    try:
        done, _ = await asyncio.wait({task, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        task.cancel()  # a no-op once done; else the request leaves the queue or its batch
    if task not in done:
        raise ApiError(499, "the client closed the connection before its answer was ready")
    return task.result()


async def _client_left(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status, headers=headers)


class _ModelPool:
    """The base model and every adapter, each loaded on first use."""

    def __init__(self, base: str):
        self.base = base
        self.loaded: dict[str, LLM] = {}
        self.broken: set[str] = set()  # adapters `preload` found unusable
        self.lock = threading.Lock()

    def names(self) -> list[str]:
        from structune.adapters import list_adapters

        return [self.base, *(m.id for m in list_adapters() if m.id not in self.broken)]

    def preload(self) -> None:
        """Load the base now; check every adapter's files, leaving out those that fail."""
        from structune.adapters import ADAPTER_WEIGHTS, list_adapters
        from structune.models.loading import check_model_spec

        self.get(self.base)
        for m in list_adapters():
            try:
                check_model_spec(m.base_model)
                if not (m.path / ADAPTER_WEIGHTS).is_file():
                    raise UserError(f"{m.path / ADAPTER_WEIGHTS} is missing")
            except UserError as exc:
                log.warning("not serving adapter %s: %s", m.id, exc)
                self.broken.add(m.id)

    def get(self, name: str) -> LLM:
        from structune.llms.local import LocalLLM

        with self.lock:  # two first requests must not load the same model twice
            if name not in self.loaded:
                self.loaded[name] = (
                    LocalLLM.load(self.base) if name == self.base else LocalLLM.load(adapter=name)
                )
            return self.loaded[name]
