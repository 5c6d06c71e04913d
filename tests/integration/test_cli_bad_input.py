"""Every subcommand with bad input, run as users run it: a `structune` process.

Each case must exit non-zero with one `error:` line that says what is wrong (the words
given) and no traceback, before any model loads (each case runs under a time bound a
model load would break), and leave what was already recorded as it was: the dataset's
rows, the adapters, the files given.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from structune.adapters import MANIFEST_FILE, AdapterManifest

# A case that loads no model runs in well under this; loading one takes longer.
CASE_TIMEOUT_S = 20


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    words: str  # what the error line must say
    env: tuple[tuple[str, str], ...] = ()


def case(*argv: str, says: str, env: dict[str, str] | None = None) -> Case:
    return Case(argv, says, tuple((env or {}).items()))


# {home} is the test's STRUCTUNE_HOME; the files named there are made by `home` below.
H = "{home}"
DB = ("--db", f"{H}/data.sqlite")
MOVIES = ("--inputs", f"{H}/movies.txt")
NO_KEY = {"OPENAI_API_KEY": ""}

CASES: dict[str, Case] = {
    # record
    "record: inputs missing": case("record", "--inputs", f"{H}/none.txt", "--teacher",
                                   "offline:albums", *DB, says="not found"),
    "record: inputs a folder": case("record", "--inputs", f"{H}/folder", "--teacher",
                                    "offline:albums", *DB, says="is a folder"),
    "record: inputs not JSON": case("record", "--inputs", f"{H}/broken.jsonl", "--teacher",
                                    "offline:albums", *DB, says="not valid JSON"),
    "record: inputs of another program": case("record", "--program", "citations", *MOVIES,
                                              "--teacher", "offline:citations", *DB,
                                              says="needs a one-variable program"),
    "record: unknown teacher": case("record", *MOVIES, "--teacher", "gpt4", *DB,
                                    says="unknown model 'gpt4'"),
    "record: API key unset": case("record", *MOVIES, "--teacher", "openai:gpt-4o", *DB,
                                  says="OPENAI_API_KEY is not set", env=NO_KEY),
    "record: base URL for a local teacher": case("record", *MOVIES, "--teacher",
                                                 "offline:albums", "--base-url", "http://x",
                                                 *DB, says="--base-url is for openai"),
    "record: unknown program": case("record", "--program", "albums", *MOVIES, "--teacher",
                                    "offline:albums", *DB, says="unknown program 'albums'"),
    "record: program not a Program": case("record", "--program", "os:path", *MOVIES,
                                          "--teacher", "offline:albums", *DB,
                                          says="not a structune.Program or a Pydantic model"),
    "record: template for a Program": case("record", "--template", "{x}", *MOVIES,
                                           "--teacher", "offline:albums", *DB,
                                           says="drop --template"),
    "record: batch size 0": case("record", *MOVIES, "--teacher", "offline:albums",
                                 "--batch-size", "0", *DB, says="must be a positive integer"),
    "record: batch size a word": case("record", *MOVIES, "--teacher", "offline:albums",
                                      "--batch-size", "ten", *DB,
                                      says="expected a positive integer"),
    "record: max tokens negative": case("record", *MOVIES, "--teacher", "offline:albums",
                                        "--max-tokens", "-5", *DB,
                                        says="must be a positive integer"),
    "record: db under a file": case("record", *MOVIES, "--teacher", "offline:albums", "--db",
                                    f"{H}/movies.txt/data.sqlite", says="is a file, not a folder"),
    # import
    "import: file missing": case("import", f"{H}/none.jsonl", "--task", "t", *DB,
                                 says="not found"),
    "import: a folder": case("import", f"{H}/folder", "--task", "t", *DB, says="is a folder"),
    "import: not JSON": case("import", f"{H}/broken.jsonl", "--task", "t", *DB,
                             says="broken.jsonl:1: not valid JSON"),
    "import: plain lines without a task": case("import", f"{H}/plain.jsonl", *DB,
                                               says="give a task name (--task)"),
    "import: empty file": case("import", f"{H}/empty.txt", "--task", "t", *DB,
                               says="holds no examples"),
    "import: not a dataset": case("import", f"{H}/plain.jsonl", "--task", "t", "--db",
                                  f"{H}/movies.txt", says="is not a structune dataset"),
    # export
    "export: to a folder": case("export", f"{H}/folder", *DB, says="is a folder"),
    "export: under a file": case("export", f"{H}/movies.txt/out.jsonl", *DB,
                                 says="is a file, not a folder"),
    "export: unknown task": case("export", f"{H}/out.jsonl", "--task", "nosuch", *DB,
                                 says="no task 'nosuch'"),
    "export: db missing": case("export", f"{H}/out.jsonl", "--db", f"{H}/typo.sqlite",
                               says="no dataset at"),
    # datasets
    "datasets: db missing": case("datasets", "--db", f"{H}/typo.sqlite", says="no dataset at"),
    "datasets: not a dataset": case("datasets", "--db", f"{H}/movies.txt",
                                    says="is not a structune dataset"),
    "datasets rm: unknown task": case("datasets", "rm", "nosuch", *DB, says="no task 'nosuch'"),
    # train
    "train: epochs NaN": case("train", "--task", "album", "--epochs", "nan", *DB,
                              says="must be a finite number above 0"),
    "train: epochs inf": case("train", "--task", "album", "--epochs", "inf", *DB,
                              says="must be a finite number above 0"),
    "train: epochs negative": case("train", "--task", "album", "--epochs", "-1", *DB,
                                   says="must be a finite number above 0"),
    "train: learning rate 0": case("train", "--task", "album", "--learning-rate", "0", *DB,
                                   says="must be a finite number above 0"),
    "train: rank 0": case("train", "--task", "album", "--lora-r", "0", *DB,
                          says="must be a positive integer"),
    "train: dropout 1": case("train", "--task", "album", "--lora-dropout", "1", *DB,
                             says="must be in [0, 1)"),
    "train: max steps 0": case("train", "--task", "album", "--max-steps", "0", *DB,
                               says="must be a positive integer"),
    "train: checkpoint every -1": case("train", "--task", "album", "--checkpoint-every", "-1",
                                       *DB, says="must be 0 or more"),
    "train: unknown base": case("train", "--task", "album", "--base", "nosuch-model", *DB,
                                says="built-in models: smollm2-135m"),
    "train: base folder missing": case("train", "--task", "album", "--base", "/no/such/dir",
                                       *DB, says="no such model file or folder"),
    "train: base GGUF missing": case("train", "--task", "album", "--base", f"{H}/none.gguf",
                                     *DB, says="none.gguf not found"),
    "train: base not a model folder": case("train", "--task", "album", "--base", f"{H}/folder",
                                           *DB, says="not a transformers model directory"),
    "train: unknown parent": case("train", "--task", "album", "--parent", "nosuch", *DB,
                                  says="adapter 'nosuch' not found"),
    "train: unknown task": case("train", "--task", "nosuch", *DB,
                                says="no valid examples for task 'nosuch'"),
    "train: db missing": case("train", "--task", "album", "--db", f"{H}/typo.sqlite",
                              says="no dataset at"),
    "train: jsonl missing": case("train", "--jsonl", f"{H}/none.jsonl", says="not found"),
    "train: program without jsonl": case("train", "--task", "album", "--program", "album", *DB,
                                         says="--program goes with --jsonl"),
    # adapters
    "adapters rm: unknown id": case("adapters", "rm", "nosuch", says="adapter 'nosuch' not found"),
    # serve
    "serve: port too high": case("serve", "--port", "70000", says="from 1 to 65535"),
    "serve: port 0": case("serve", "--port", "0", says="must be a positive integer"),
    "serve: port in use": case("serve", "--port", "{busy_port}", says="cannot listen"),
    "serve: base missing": case("serve", "--base", "/no/such/dir",
                                says="no such model file or folder"),
    "serve: compile timeout NaN": case("serve", "--compile-timeout", "nan",
                                       says="must be a finite number above 0"),
    "serve: max batch 0": case("serve", "--max-batch", "0", says="must be a positive integer"),
    # export-adapter
    "export-adapter: unknown id": case("export-adapter", "nosuch", f"{H}/out.gguf",
                                       says="adapter 'nosuch' not found"),
    "export-adapter: type without gguf": case("export-adapter", "cites-1", f"{H}/out.gguf",
                                              "--type", "q8_0", says="--type sets the tensor"),
    "export-adapter: to a folder": case("export-adapter", "cites-1", f"{H}/folder",
                                        says="is a folder"),
    "export-adapter: modelfile of merged": case("export-adapter", "cites-1", f"{H}/m",
                                                "--format", "merged", "--modelfile",
                                                says="--modelfile goes with the GGUF"),
    "export-adapter: unknown format": case("export-adapter", "cites-1", f"{H}/out.gguf",
                                           "--format", "onnx", says="invalid choice: 'onnx'"),
    # compare
    "compare: inputs missing": case("compare", "--inputs", f"{H}/none.txt", "--model",
                                    "offline:albums", says="not found"),
    "compare: no inputs": case("compare", "--inputs", f"{H}/empty.txt", "--model",
                               "offline:albums", says="no held-out inputs"),
    "compare: adapter of another task": case("compare", *MOVIES, "--model", "cites-1",
                                             says="trained for task 'citations', not 'album'"),
    "compare: unknown model": case("compare", *MOVIES, "--model", "nosuch",
                                   says="unknown model 'nosuch'"),
    "compare: max tokens 0": case("compare", *MOVIES, "--model", "offline:albums",
                                  "--max-tokens", "0", says="must be a positive integer"),
    "compare: json to a folder": case("compare", *MOVIES, "--model", "offline:albums",
                                      "--json", f"{H}/folder", says="is a folder"),
    "compare: relax without constrained": case("compare", *MOVIES, "--model", "offline:albums",
                                               "--relax", says="add --constrained"),
    "compare: training db missing": case("compare", *MOVIES, "--model", "offline:albums",
                                         "--training-db", f"{H}/none.sqlite",
                                         says="--training-db"),
    # eval
    "eval: gold missing": case("eval", *MOVIES, "--model", "offline:albums", "--gold",
                               f"{H}/none.jsonl", says="not found"),
    "eval: gold not JSON": case("eval", *MOVIES, "--model", "offline:albums", "--gold",
                                f"{H}/broken.jsonl", says="not valid JSON"),
    "eval: html to a folder": case("eval", *MOVIES, "--model", "offline:albums", "--html",
                                   f"{H}/folder", says="is a folder"),
    "eval: adapter of another task": case("eval", *MOVIES, "--model", "cites-1",
                                          says="trained for task 'citations', not 'album'"),
    "eval: gold and reference": case("eval", *MOVIES, "--model", "offline:albums", "--gold",
                                     f"{H}/g.jsonl", "--reference", "offline:albums",
                                     says="not allowed with argument"),
    # prompt
    "prompt: unknown model": case("prompt", "-m", "nosuch", "hi", says="unknown model"),
    "prompt: schema not JSON": case("prompt", "hi", "--schema", "{bad",
                                    says="--schema is not JSON"),
    "prompt: schema not an object": case("prompt", "hi", "--schema", "[1]",
                                         says="must be a JSON object"),
    "prompt: temperature 3": case("prompt", "hi", "--temperature", "3",
                                  says="between 0 and 2"),
    "prompt: top-p 0": case("prompt", "hi", "--top-p", "0", says="must be in (0, 1]"),
    "prompt: seed negative": case("prompt", "hi", "--seed", "-1", says="must be 0 or more"),
    "prompt: seed over 32 bits": case("prompt", "hi", "--seed", str(2**32), says="seed must be"),
    "prompt: repetition penalty 0": case("prompt", "hi", "--repetition-penalty", "0",
                                         says="above 0"),
    "prompt: template without program": case("prompt", "hi", "--template", "{x}",
                                             says="--template goes with --program"),
    "prompt: constrained without schema": case("prompt", "hi", "--constrained",
                                               says="give --schema or --program"),
    "prompt: relax without constrained": case("prompt", "hi", "--schema", "{}", "--relax",
                                              says="--relax loosens the grammar"),
    "prompt: schema and program": case("prompt", "hi", "--schema", "{}", "--program", "album",
                                       says="not allowed with argument"),
    # ingest
    "ingest: PDF missing": case("ingest", f"{H}/none.pdf", "--index", f"{H}/idx",
                                says="not found"),
    "ingest: not a PDF": case("ingest", f"{H}/movies.txt", "--index", f"{H}/idx",
                              says="not a PDF"),
    "ingest: a folder": case("ingest", f"{H}/folder", "--index", f"{H}/idx",
                             says="is a folder"),
    "ingest: chunk size 0": case("ingest", f"{H}/movies.txt", "--index", f"{H}/idx",
                                 "--chunk-size", "0", says="must be a positive integer"),
    "ingest: negative overlap": case("ingest", f"{H}/movies.txt", "--index", f"{H}/idx",
                                     "--chunk-overlap", "-1", says="must be 0 or more"),
    # questions, retrieve, ask
    "questions: no index": case("questions", "--index", f"{H}/none", "--out", f"{H}/q.jsonl",
                                says="holds no structune index"),
    "questions: out a folder": case("questions", "--index", f"{H}/none", "--out",
                                    f"{H}/folder", says="is a folder"),
    "questions: per chunk without an LLM": case("questions", "--index", f"{H}/none", "--out",
                                                f"{H}/q.jsonl", "--per-chunk", "2",
                                                says="give --llm"),
    "questions: temperature without an LLM": case("questions", "--index", f"{H}/none", "--out",
                                                  f"{H}/q.jsonl", "--temperature", "0.7",
                                                  says="give --llm"),
    "retrieve: questions missing": case("retrieve", "--index", f"{H}/none", "--questions",
                                        f"{H}/none.jsonl", "--out", f"{H}/i.jsonl",
                                        says="questions file"),
    "retrieve: out a folder": case("retrieve", "--index", f"{H}/none", "--questions",
                                   f"{H}/q.jsonl", "--out", f"{H}/folder", says="is a folder"),
    "ask: empty question": case("ask", "  ", "--index", f"{H}/none", says="question is empty"),
    "ask: no index": case("ask", "Which works?", "--index", f"{H}/none",
                          "--model", "offline:citations", says="holds no structune index"),
    "ask: unknown model": case("ask", "Which works?", "--index", f"{H}/none", "--model",
                               "nosuch", says="unknown model"),
    # demo (before the 15 minutes of its first part)
    "demo: PDF missing": case("demo", "--pdf", f"{H}/none.pdf", *DB, says="none.pdf not found"),
    "demo: held-out 0": case("demo", "--heldout", "0", *DB, says="must be a positive integer"),
    "demo: report to a folder": case("demo", "--report", f"{H}/folder", *DB,
                                     says="is a folder"),
    "demo: epochs NaN": case("demo", "--epochs", "nan", *DB, says="finite number above 0"),
    # models, and an unknown command
    "models: unknown flag": case("models", "--all", says="unrecognized arguments: --all"),
    "unknown command": case("trian", says="invalid choice: 'trian'"),
}  # fmt: skip


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a dataset with album answers, a citation adapter, input files."""
    from structune.record import DatasetStore
    from structune.record.jsonl import import_jsonl
    from structune.tasks.albums import album_program, curated_albums

    home = tmp_path_factory.mktemp("user")
    (home / "folder").mkdir()
    (home / "movies.txt").write_text("Heat\nAlien\n")
    (home / "broken.jsonl").write_text("{not json\n")
    (home / "empty.txt").write_text("\n")
    (home / "q.jsonl").write_text(json.dumps({"question": "Which?", "node_id": "n"}) + "\n")
    (home / "g.jsonl").write_text(json.dumps(curated_albums()[0]["album"]) + "\n")
    plain = [
        {
            "messages": [
                *album_program.messages({"movie_name": a["movie_name"]}),
                {"role": "assistant", "content": json.dumps(a["album"])},
            ]
        }
        for a in curated_albums()[:3]
    ]
    (home / "plain.jsonl").write_text("".join(json.dumps(line) + "\n" for line in plain))
    with DatasetStore(home / "data.sqlite") as store:
        import_jsonl(home / "plain.jsonl", store, program=album_program)
    manifest = AdapterManifest(
        id="cites-1", base_model="smollm2-135m", task="citations", dataset_hash="0",
        dataset_size=1, config={}, loss_history=[1.0], steps=1, tokens_trained=1,
        train_seconds=1.0,
    )  # fmt: skip
    (home / "adapters" / "cites-1").mkdir(parents=True)
    (home / "adapters" / "cites-1" / MANIFEST_FILE).write_text(manifest.model_dump_json())
    return home


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def _state(home: Path) -> dict[str, object]:
    """What must not change: the dataset's rows, the files and folders of the home."""
    with sqlite3.connect(home / "data.sqlite") as db:
        rows = db.execute("SELECT * FROM examples ORDER BY id").fetchall()
    files = {
        str(p.relative_to(home)): p.read_bytes() if p.is_file() else None
        for p in sorted(home.rglob("*"))
        if not p.name.startswith("data.sqlite")  # WAL files come and go with readers
    }
    return {"rows": rows, "files": files}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_line_and_changes_nothing(name: str, home: Path, busy_port: int):
    given = CASES[name]
    argv = [a.replace(H, str(home)).replace("{busy_port}", str(busy_port)) for a in given.argv]
    env = {**os.environ, "STRUCTUNE_HOME": str(home), **dict(given.env)}
    env.pop("STRUCTUNE_DB", None)
    before = _state(home)

    done = subprocess.run(
        [sys.executable, "-m", "structune.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=CASE_TIMEOUT_S,
        cwd=home,
    )

    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert given.words in errors[0], errors[0]
    assert _state(home) == before


def test_the_matrix_covers_every_subcommand():
    from structune.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    covered = {c.argv[0] for c in CASES.values()}
    assert set(commands) <= covered
    assert len(CASES) >= 60
