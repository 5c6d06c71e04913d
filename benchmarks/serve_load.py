"""`structune serve` under concurrent clients: requests/s, latency percentiles, errors, memory.

    .venv/bin/python benchmarks/serve_load.py [--clients 8] [--seconds 60]

Starts the server as a real process on 127.0.0.1, then `--clients` threads each send
schema-constrained chat requests (a small verdict schema, 32 tokens at most) back to back
for `--seconds`. Prints the figures, and the server's resident memory at start and end.
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
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Is the sky green? Answer in JSON."}],
        "max_tokens": 32,
        "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}},
    }
    httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)  # load the model first
    start_rss = rss_mb(server.pid)

    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + args.seconds

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    response = http.post(f"{url}/v1/chat/completions", json=body)
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}")
                        continue
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - began)

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    end_rss = rss_mb(server.pid)
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
    print(f"server RSS: {start_rss:.0f} MB at start, {end_rss:.0f} MB at end")


if __name__ == "__main__":
    main()
