"""A real OpenAI-compatible teacher on 127.0.0.1 for the recording tests.

It answers the album program's prompts (`POST /v1/chat/completions`) with a valid album
for the movie in the prompt, after a random delay so that kills land mid-batch. Per movie,
a script of faults replaces its first answers, one fault per request, the way real APIs
fail: a status with headers, a sleep past the client's timeout, a body cut short. Every
request is logged per movie with its arrival time and the time its reply was sent, so a
test can count retries and measure the gaps between them on the server's side.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

_MOVIE = re.compile(r"Using the movie (.+?) as inspiration\.")


@dataclass(frozen=True)
class Fault:
    """One scripted reply in place of an answer.

    kind: "status" answers `status` with `headers`; "sleep" waits `seconds` before
    answering (past a client's timeout); "cut" sends half of a valid answer and closes
    the connection; "short" sends half of a valid answer as a complete body; "text" answers
    200 with a completion that is not JSON.
    """

    kind: Literal["status", "sleep", "cut", "short", "text"]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Request:
    arrived: float
    replied: float = 0.0
    reply: str = "answer"


def album_for(movie: str) -> str:
    return json.dumps(
        {
            "name": f"{movie} Suite",
            "artist": "The Teachers",
            "songs": [{"title": f"Theme from {movie}", "length_seconds": 180}],
        }
    )


class TeacherServer:
    """Start with `TeacherServer(...)`; `url` is the API root to give the client."""

    def __init__(
        self,
        *,
        faults: dict[str, list[Fault]] | None = None,
        max_delay_s: float = 0.0,
        seed: int = 0,
    ):
        self.faults = {movie: list(script) for movie, script in (faults or {}).items()}
        self.requests: dict[str, list[Request]] = defaultdict(list)
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._max_delay_s = max_delay_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that timed out and hung up is part of the script

        self._httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> TeacherServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        match = _MOVIE.search(body["messages"][-1]["content"])
        movie = match.group(1) if match else "?"
        request = Request(arrived=time.monotonic())
        with self._lock:
            self.requests[movie].append(request)
            script = self.faults.get(movie)
            fault = script.pop(0) if script else None
            delay = self._random.uniform(0, self._max_delay_s)
        time.sleep(delay)
        if fault is None:
            _send(handler, 200, _completion(album_for(movie)))
        else:
            request.reply = f"{fault.kind} {fault.status}" if fault.kind == "status" else fault.kind
            _play(handler, fault, movie)
        request.replied = time.monotonic()


def _completion(text: str) -> bytes:
    return json.dumps(
        {
            "choices": [
                {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20},
        }
    ).encode()


def _play(handler: BaseHTTPRequestHandler, fault: Fault, movie: str) -> None:
    answer = _completion(album_for(movie))
    if fault.kind == "status":
        _send(handler, fault.status, b'{"error": {"message": "scripted"}}', fault.headers)
    elif fault.kind == "sleep":
        time.sleep(fault.seconds)
        _send(handler, 200, answer)
    elif fault.kind == "cut":
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer[: len(answer) // 2])
        handler.close_connection = True
    elif fault.kind == "short":
        _send(handler, 200, answer[: len(answer) // 2])
    else:
        _send(handler, 200, _completion("I would rather not answer in JSON."))


def _send(
    handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None
) -> None:
    try:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except OSError:
        pass  # the client gave up waiting (a scripted sleep): nothing to answer
