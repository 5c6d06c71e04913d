"""`structune serve` under concurrent clients: requests/s, latency percentiles, errors, memory.

    .venv/bin/python benchmarks/serve_load.py [--clients 8] [--seconds 60]

Starts the server as a real process on 127.0.0.1, then `--clients` threads each send
schema-constrained chat requests (a small verdict schema, 32 tokens at most) back to back
for `--seconds`, each about another held-out movie (prompts of varied length). Prints the
figures, and the server's resident memory sampled every 5 s: stable memory is a flat
second half.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from structune.tasks.albums import heldout_movies

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 40}},
    "required": ["ok", "reason"],
    "additionalProperties": False,
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "structune.cli", "-q", "serve", "--port", str(port)],
        env=os.environ.copy(),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.3)
    movies = heldout_movies()

    def body(i: int) -> dict[str, object]:
        question = f"Is the movie {movies[i % len(movies)]} a comedy? Answer in JSON."
        return {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 32,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "v", "schema": SCHEMA},
            },
        }

    httpx.post(f"{url}/v1/chat/completions", json=body(0), timeout=120)  # load the model first
    rss_samples = [rss_mb(server.pid)]

    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + args.seconds

    def client(number: int) -> None:
        with httpx.Client(timeout=120) as http:
            sent = 0
            while time.monotonic() < deadline:
                began = time.perf_counter()
                sent += 1
                try:
                    response = http.post(
                        f"{url}/v1/chat/completions", json=body(number + sent * args.clients)
                    )
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}")
                        continue
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - began)

    def sample_memory() -> None:
        while time.monotonic() < deadline:
            time.sleep(5)
            rss_samples.append(rss_mb(server.pid))

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    threads.append(threading.Thread(target=sample_memory))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    server.terminate()
    server.wait(timeout=30)

    latencies.sort()
    p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)] if latencies else float("nan")
    print(
        f"clients={args.clients} seconds={wall:.0f} requests={len(latencies)} errors={len(errors)}"
    )
    print(
        f"requests/s={len(latencies) / wall:.2f} p50={statistics.median(latencies):.2f}s "
        f"p95={p95:.2f}s"
    )
    half = len(rss_samples) // 2
    print("server RSS every 5 s (MB): " + " ".join(f"{mb:.0f}" for mb in rss_samples))
    print(
        f"server RSS: {rss_samples[0]:.0f} MB after the first request, "
        f"{rss_samples[half]:.0f} MB at half time, {rss_samples[-1]:.0f} MB at the end "
        f"(second half: {rss_samples[-1] - rss_samples[half]:+.0f} MB)"
    )


if __name__ == "__main__":
    main()
