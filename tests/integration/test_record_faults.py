"""Recording under faults, against a real teacher server on 127.0.0.1 (issue #8, parts 1-2).

A teacher that fails the way real APIs fail: retries stay within the client's maximum
and wait as long as Retry-After asks; every input ends answered or stored failed with
its cause. Processes killed with SIGKILL mid-recording and mid-export: nothing committed
is lost, nothing is stored twice, the database stays intact and the export file is always
a complete one. Several processes recording into one file at once: no "database is locked".
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from itertools import pairwise
from pathlib import Path

import pytest

from structune import BackendError, DatasetStore, OpenAICompatibleLLM, UserError, export_jsonl
from structune.record import record
from structune.tasks.albums import album_program
from structune.train.sources import conversations_from_store
from teacher_server import Fault, TeacherServer

STRUCTUNE = Path(sys.executable).with_name("structune")


def rate_limited(seconds: float) -> Fault:
    return Fault("status", 429, headers={"Retry-After": str(seconds)})


def status(code: int) -> Fault:
    return Fault("status", code)


TIMEOUT_S = 0.5
MAX_RETRIES = 2
# movie -> (the server's replies before its answer, requests it should see, the outcome)
SCRIPT: dict[str, tuple[list[Fault], int, str]] = {
    "Heat": ([], 1, "valid"),
    "Alien": ([rate_limited(0.2)], 2, "valid"),
    "Jaws": ([rate_limited(0.2), rate_limited(0.3)], 3, "valid"),
    "Rocky": ([status(503), status(500)], 3, "valid"),
    "Vertigo": ([Fault("sleep", seconds=2 * TIMEOUT_S)], 2, "valid"),
    "Tron": ([Fault("cut")], 2, "valid"),
    "Her": ([Fault("text")], 1, "invalid"),
    "Fargo": ([status(500), status(503), status(502)], 3, "HTTP 502"),
    "Psycho": ([rate_limited(0.2)] * 3, 3, "HTTP 429"),
    "Brazil": ([Fault("sleep", seconds=2 * TIMEOUT_S)] * 3, 3, "did not answer in time"),
    "Dune": ([Fault("short")] * 3, 3, "not JSON"),
    "Up": ([Fault("cut")] * 3, 3, "broke off its answer"),
    "Cars": ([status(400)], 1, "HTTP 400"),
    "Big": ([status(401)], 1, "HTTP 401"),
}


def movies(names) -> list[dict[str, str]]:
    return [{"movie_name": name} for name in names]


def teacher(url: str) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(
        "teacher",
        base_url=url,
        api_key="k",
        max_retries=MAX_RETRIES,
        backoff_s=0.01,
        timeout=TIMEOUT_S,
    )


def test_teacher_faults_are_retried_within_bounds_and_end_recorded_with_their_cause(tmp_path):
    faults = {movie: script for movie, (script, _, _) in SCRIPT.items()}
    with TeacherServer(faults=faults) as server, DatasetStore(tmp_path / "d.sqlite") as store:
        summary = record(
            album_program, teacher(server.url), movies(SCRIPT), store=store, progress=False
        )
        outcomes = [outcome for _, _, outcome in SCRIPT.values()]
        assert summary.valid == outcomes.count("valid") == 6
        assert summary.invalid == outcomes.count("invalid") == 1
        assert summary.failed == len(SCRIPT) - 7 == 7
        assert summary.recorded == 7

        for movie, (_, requests, _) in SCRIPT.items():
            seen = server.requests[movie]
            assert len(seen) == requests <= MAX_RETRIES + 1, movie
            for attempt, (before, after) in enumerate(pairwise(seen)):
                if before.reply == "status 429":  # waited at least what Retry-After asked
                    asked = float(faults[movie][attempt].headers["Retry-After"])
                    assert after.arrived - before.replied >= asked, movie

        rows = {e.inputs["movie_name"]: e for e in store.examples()}
        assert set(rows) == set(SCRIPT)
        for movie, (_, _, outcome) in SCRIPT.items():
            row = rows[movie]
            if outcome == "valid":
                assert row.valid and not row.failed and row.error is None, movie
            elif outcome == "invalid":
                assert not row.valid and not row.failed and "no JSON object" in row.error
            else:
                assert row.failed and not row.valid and row.completion == "", movie
                assert row.error.startswith("teacher error: ") and outcome in row.error, movie
        assert len(conversations_from_store(store, "album")) == 6  # failures never train

        # The faults are spent: a re-run asks again for the failures only, not the invalid one.
        again = record(
            album_program, teacher(server.url), movies(SCRIPT), store=store, progress=False
        )
        assert (again.recorded, again.skipped, again.valid, again.failed) == (7, 7, 7, 0)
        assert len(server.requests["Her"]) == 1
        assert not any(e.failed for e in store.examples())
        assert len(store.examples()) == len(SCRIPT)


def test_a_teacher_that_refuses_the_first_batch_stops_the_run(tmp_path):
    names = [f"Movie {i}" for i in range(6)]
    refused = {name: [status(401)] for name in names[:2]}
    with (
        TeacherServer(faults=refused) as server,
        DatasetStore(tmp_path / "d.sqlite") as store,
    ):
        with pytest.raises(UserError, match=r"every input of the first batch \(2\).*HTTP 401"):
            record(
                album_program,
                teacher(server.url),
                movies(names),
                store=store,
                batch_size=2,
                progress=False,
            )
        assert [len(server.requests[n]) for n in names] == [1, 1, 0, 0, 0, 0]
        assert [e.failed for e in store.examples()] == [True, True]

        # The scripted refusals are spent: the new inputs go first, the two failures last.
        s = record(
            album_program,
            teacher(server.url),
            movies(names),
            store=store,
            batch_size=2,
            progress=False,
        )
        assert (s.recorded, s.failed) == (6, 0)
        assert [len(server.requests[n]) for n in names] == [2, 2, 1, 1, 1, 1]


def test_a_teacher_that_is_down_stops_the_run_with_the_cause(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    llm = OpenAICompatibleLLM("teacher", base_url=url, max_retries=1, backoff_s=0.01)
    with DatasetStore(tmp_path / "d.sqlite") as store:
        with pytest.raises(BackendError, match=r"first batch.*cannot reach"):
            record(album_program, llm, movies(["Heat", "Alien", "Jaws"]), store=store)
        assert len(store.examples()) == 3 and all(e.failed for e in store.examples())


# Processes: the `structune` CLI and small scripts, killed for real.


def environment(url: str) -> dict[str, str]:
    return {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "k"}


def record_command(db: Path, inputs: Path, batch_size: int) -> list[str]:
    return [
        str(STRUCTUNE), "-q", "record", "--program", "album", "--teacher", "openai:teacher",
        "--inputs", str(inputs), "--db", str(db), "--batch-size", str(batch_size),
    ]  # fmt: skip


def write_inputs(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{name}\n" for name in names))
    return path


def stored_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with closing(sqlite3.connect(db)) as connection:
        try:
            return {row[0] for row in connection.execute("SELECT id FROM examples")}
        except sqlite3.OperationalError:  # not created yet
            return set()


def integrity(db: Path) -> str:
    with closing(sqlite3.connect(db)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def assert_complete(db: Path, names: list[str]) -> None:
    """Every name recorded once, validly, and nothing else."""
    with DatasetStore(db) as store:
        examples = store.examples("album")
    recorded = [e.inputs["movie_name"] for e in examples]
    assert len(recorded) == len(set(recorded)), "an input is stored twice"
    assert sorted(recorded) == sorted(names)
    assert all(e.valid for e in examples)


@pytest.mark.slow
def test_several_processes_record_into_one_store_at_once(tmp_path):
    names = [f"Movie {i:03d}" for i in range(200)]
    slices = [names[:100], names[50:150], names[100:], names[::-1]]  # disjoint and overlapping
    db = tmp_path / "shared.sqlite"  # created by whichever process comes first
    with TeacherServer(max_delay_s=0.005) as server:
        processes = [
            subprocess.Popen(
                record_command(db, write_inputs(tmp_path / f"in{n}.txt", part), batch_size=1),
                env=environment(server.url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n, part in enumerate(slices)
        ]
        results = [(p.communicate(timeout=120), p.returncode) for p in processes]
    for (out, err), code in results:
        assert code == 0 and "locked" not in err, err
        assert out.startswith("recorded ")
    assert integrity(db) == "ok"
    assert_complete(db, names)


KILLED_AT_COMMIT = """
import os, signal, sys
from structune.llms.openai_compat import OpenAICompatibleLLM
from structune.record import DatasetStore, record
from structune.tasks.albums import album_program

db, url, inputs, die_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
commits = 0

def die_at_commit(statement):
    global commits
    if statement == "COMMIT":
        commits += 1
        if commits == die_at:
            os.kill(os.getpid(), signal.SIGKILL)

with DatasetStore(db) as store:
    store._db.set_trace_callback(die_at_commit)  # the batch's rows are written, not committed
    names = open(inputs).read().split()
    llm = OpenAICompatibleLLM("teacher", base_url=url, api_key="k")
    record(album_program, llm, [{"movie_name": n} for n in names], store=store, batch_size=3)
"""


@pytest.mark.slow
def test_recording_and_export_survive_kill_9(tmp_path):
    rng = random.Random(8)
    names = [f"Film{i:03d}" for i in range(400)]
    inputs = write_inputs(tmp_path / "movies.txt", names)
    db = tmp_path / "d.sqlite"
    kept: set[str] = set()

    def after_a_kill() -> set[str]:
        nonlocal kept
        assert integrity(db) == "ok"
        now = stored_ids(db)
        assert kept <= now, "a committed example was lost"
        kept = now
        return now

    with TeacherServer(max_delay_s=0.02, seed=8) as server:
        env = environment(server.url)
        # SIGKILL from outside at random moments: once a few more rows are committed, and
        # then a random few milliseconds later, mid-request, mid-commit or in between.
        kills = 0
        while kills < 20:
            assert len(kept) < len(names), "inputs ran out before 20 kills; add more"
            process = subprocess.Popen(record_command(db, inputs, batch_size=2), env=env)
            target = len(kept) + rng.randint(1, 8)
            while process.poll() is None and len(stored_ids(db)) < target:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.03))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
            after_a_kill()

        # SIGKILL from inside, as a batch commits: that batch is absent, whole, and earlier
        # ones are all there.
        for die_at in (2, 3, 4, 5):  # commit 1 is the schema's; then one per batch of 3
            before = len(kept)
            script = [sys.executable, "-c", KILLED_AT_COMMIT, str(db), server.url, str(inputs)]
            process = subprocess.run([*script, str(die_at)], env=env, timeout=60)
            assert process.returncode == -signal.SIGKILL
            assert len(after_a_kill()) - before == 3 * (die_at - 2)
            kills += 1

        finished = subprocess.run(record_command(db, inputs, batch_size=8), env=env)
        assert finished.returncode == 0
        assert integrity(db) == "ok"
        assert_complete(db, names)

        export_kills, mid_write = export_under_kill_9(tmp_path, db, server.url, rng)
    print(f"{kills} recording kills, {export_kills} export kills ({mid_write} mid-write)")
    assert kills >= 24 and export_kills >= 6 and mid_write >= 1


def export_under_kill_9(tmp_path: Path, db: Path, url: str, rng: random.Random) -> tuple[int, int]:
    """Kill `structune export` again and again while the dataset grows between exports:
    the file is always absent, the old complete export or the new complete one."""
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    out = out_dir / "album.jsonl"
    old: bytes | None = None
    kills = mid_write = 0
    for cycle in range(30):
        if kills >= 6 and mid_write >= 2:
            break
        with DatasetStore(db) as store:  # three more rows, so the new export differs
            more = movies([f"Extra{cycle}-{n}" for n in range(3)])
            record(album_program, teacher(url), more, store=store, progress=False)
            new = expected_export(store, tmp_path / "reference.jsonl")
        temps_before = set(out_dir.glob(".album.jsonl.*.tmp"))
        process = subprocess.Popen([str(STRUCTUNE), "-q", "export", str(out), "--db", str(db)])
        if cycle % 2 == 0:  # wait for the temporary file: the kill lands mid-write
            while process.poll() is None and not set(out_dir.glob(".*.tmp")) - temps_before:
                time.sleep(0.0005)
        else:  # anywhere in the process's life
            time.sleep(rng.uniform(0.2, 1.0))
        time.sleep(rng.uniform(0, 0.003))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        mid_write += bool(set(out_dir.glob(".*.tmp")) - temps_before)
        assert integrity(db) == "ok"
        now = out.read_bytes() if out.exists() else None
        assert now in (old, new), "the export file is neither the old one nor the new one"
        if now is not None:
            lines = now.decode().splitlines()
            assert all(json.loads(line)["messages"] for line in lines)
        old = now
    return kills, mid_write


def expected_export(store: DatasetStore, path: Path) -> bytes:
    export_jsonl(store, path)
    return path.read_bytes()
