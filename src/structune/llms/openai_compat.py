"""Any OpenAI-compatible chat completions endpoint as an `LLM` (a black box: no grammar).

Transient failures (429, 5xx, timeouts, refused connections, bodies cut short) are
retried with exponential backoff, honouring `Retry-After`, at most `max_retries` times;
a 4xx other than 429 is the caller's mistake (bad key, bad request) and fails at once.
The key comes from an environment variable, never from a file in the project.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from structune.constrain.extractive import strip_extractive
from structune.errors import BackendError, UserError
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 120.0  # a server asking for longer is treated as down after the retries

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAICompatibleLLM(LLM):
    """A chat model behind `POST {base_url}/chat/completions`.

    Args:
        model: the model name the endpoint serves.
        base_url: the API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`;
            defaults to `OPENAI_BASE_URL`, then OpenAI's.
        api_key: the bearer token; defaults to the environment variable `api_key_env`.
        max_retries: how many times a transient failure is retried.
        timeout: seconds per request.
        client: an `httpx.Client` to use instead of a new one.
        schema_style: how a `json_schema` is sent: `"json_schema"` is OpenAI's structured
            outputs (vLLM, llama.cpp's server); `"json_object"` sends
            `{"type": "json_object", "schema": ...}`, the form llama-cpp-python's server takes.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_retries: int = 4,
        backoff_s: float = 0.5,
        timeout: float = 120.0,
        client: httpx.Client | None = None,
        schema_style: Literal["json_schema", "json_object"] = "json_schema",
    ):
        self.model = model
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        ).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        if not self.api_key and urlsplit(self.base_url).hostname == "api.openai.com":
            # OpenAI's own API answers 401 to every request without a key: say so first
            raise UserError(
                f"{api_key_env} is not set: export your API key in it, or point "
                "OPENAI_BASE_URL (or --base-url) at an OpenAI-compatible server that needs none"
            )
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.client = client or httpx.Client(timeout=timeout)
        self.schema_style = schema_style
        self.model_id = f"openai:{model}"

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            **_sampling_fields(sampling),
        }
        if json_schema is not None:  # the server enforces it
            # Extracted fields are checked after parsing: a server cannot copy from our inputs.
            json_schema = strip_extractive(json_schema)
            body["response_format"] = (
                {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": dict(json_schema), "strict": True},
                }
                if self.schema_style == "json_schema"
                else {"type": "json_object", "schema": dict(json_schema)}
            )
        started = time.perf_counter()
        data = self._post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Completion(
                text=choice["message"]["content"] or "",
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                latency_s=time.perf_counter() - started,
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                f"{self.base_url} answered an unexpected body ({exc!r}): {data}"
            ) from None

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self.client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:  # timeouts included
                if last:
                    raise BackendError(_transport_failure(url, exc, attempt + 1)) from None
                self._sleep(attempt, None)
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:  # a body cut short, or an error page from a proxy
                    if last:
                        raise BackendError(
                            f"{url} answered a body that is not JSON "
                            f"({response.text[:100]!r}) after {attempt + 1} attempt(s)"
                        ) from None
                    self._sleep(attempt, None)
                    continue
            if response.status_code in (401, 403):
                raise UserError(
                    f"{url} refused the API key (HTTP {response.status_code}); "
                    "set OPENAI_API_KEY (or the variable you named) to a valid key"
                )
            if response.status_code not in _RETRYABLE_STATUS or last:
                raise BackendError(
                    f"{url} answered HTTP {response.status_code} (attempt {attempt + 1}): "
                    f"{response.text[:300]}"
                )
            self._sleep(attempt, response.headers.get("retry-after"))
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff_s * 2**attempt
        if retry_after is not None:
            with contextlib.suppress(ValueError):  # an HTTP date: keep the backoff
                asked = float(retry_after)
                if math.isfinite(asked) and asked >= 0:
                    delay = max(delay, min(asked, MAX_RETRY_AFTER_S))
        log.warning("retrying %s in %.1fs (attempt %d)", self.base_url, delay, attempt + 2)
        time.sleep(delay)


def _sampling_fields(sampling: Sampling) -> dict[str, Any]:
    """`sampling` in OpenAI's request fields. `repetition_penalty` is not one of them: it is
    sent only when asked for, to the servers that take it (vLLM, llama.cpp's)."""
    fields: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p}
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    if sampling.repetition_penalty != 1.0:
        fields["repetition_penalty"] = sampling.repetition_penalty
    return fields


def _transport_failure(url: str, exc: httpx.TransportError, attempts: int) -> str:
    tried = f"after {attempts} attempt(s)"
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"{url} did not answer in time ({type(exc).__name__}) {tried}; is the server "
            "overloaded, or the timeout too short?"
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{url} broke off its answer ({exc}) {tried}"
    return (
        f"cannot reach {url} ({type(exc).__name__}: {exc}) {tried}; is the server running "
        "and the URL right?"
    )
