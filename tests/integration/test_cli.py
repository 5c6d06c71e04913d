"""The CLI: fast help, one-line errors, every command documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from structune.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env_home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "STRUCTUNE_HOME": str(env_home), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "structune.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_help_and_import_do_not_import_torch():
    code = (
        "import sys, structune, structune.cli; structune.cli.build_parser().format_help();"
        "structune.Program; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = run_cli(
        "import", str(bad), "--task", "t", "--db", str(tmp_path / "d.sqlite"), env_home=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: ") and "bad.jsonl:1" in result.stderr

    result = run_cli(
        "compare", "--inputs", str(tmp_path / "missing.txt"), "--model", "x", env_home=tmp_path
    )
    assert result.returncode == 1 and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_export_and_datasets_through_the_cli(tmp_path):
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "{}"}]}
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(line) + "\n")
    db = str(tmp_path / "d.sqlite")
    imported = run_cli("import", str(source), "--task", "demo", "--db", db, env_home=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 examples" in imported.stdout
    listed = run_cli("datasets", "--db", db, env_home=tmp_path)
    assert "demo" in listed.stdout and "1 valid" in listed.stdout
    out = tmp_path / "out.jsonl"
    exported = run_cli("export", str(out), "--db", db, env_home=tmp_path)
    assert exported.returncode == 0 and json.loads(out.read_text())["messages"] == line["messages"]


def test_every_command_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [name for name in commands if f"structune {name}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"


def eval_files(tmp_path: Path, movies: int = 3) -> tuple[Path, list[dict]]:
    """A held-out file of curated movies (the offline teacher knows them), and their albums."""
    from structune.tasks.albums import curated_albums

    chosen = curated_albums()[:movies]
    inputs = tmp_path / "heldout.txt"
    inputs.write_text("".join(f"{a['movie_name']}\n" for a in chosen))
    return inputs, [a["album"] for a in chosen]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_against_gold_answers_prints_the_table_and_writes_json(tmp_path):
    inputs, albums = eval_files(tmp_path)
    albums[1]["songs"][0]["title"] = "Not the Title"  # one leaf of 3 albums disagrees
    gold = write_jsonl(tmp_path / "gold.jsonl", albums)
    out = tmp_path / "eval.json"
    result = run_cli(
        "eval", "--inputs", str(inputs), "--model", "offline:albums", "--gold", str(gold),
        "--json", str(out), env_home=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "agreement with gold answers over 3 inputs" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("offline:albums"))
    assert row.split()[1:4] == ["3/3", "3/3", "0/3"]
    agreement = json.loads(out.read_text())["scores"][0]["agreement"]
    assert (agreement["fp"], agreement["fn"]) == (1, 1)
    assert agreement["paths"]["songs[].title"]["fp"] == 1


def test_compare_counts_values_copied_from_the_training_dataset(tmp_path):
    inputs, _ = eval_files(tmp_path)
    db = tmp_path / "trained.sqlite"
    recorded = run_cli(
        "record", "--inputs", str(inputs), "--teacher", "offline:albums", "--db", str(db),
        env_home=tmp_path,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    out = tmp_path / "cmp.json"
    result = run_cli(
        "compare", "--inputs", str(inputs), "--model", "offline:albums", "--training-db",
        str(db), "--json", str(out), env_home=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    row = next(line for line in result.stdout.splitlines() if line.startswith("offline:albums"))
    assert "copied" in header and row.split()[header.index("copied")] == "1.00"
    content = json.loads(out.read_text())["scores"][0]["content"]
    assert content["copied"] == content["strings"] > 0  # the same teacher: every value copied


def test_eval_with_a_teacher_as_reference_and_an_html_report(tmp_path):
    from teacher_server import Fault, TeacherServer

    inputs, _ = eval_files(tmp_path)
    second = inputs.read_text().splitlines()[1]
    html, out = tmp_path / "eval.html", tmp_path / "eval.json"
    # the teacher's first answer for the second movie is not JSON: that input has no reference
    with TeacherServer(faults={second: [Fault("text")]}) as server:
        result = run_cli(
            "eval", "--inputs", str(inputs), "--model", "offline:albums",
            "--reference", "openai:teacher", "--html", str(html), "--json", str(out),
            env_home=tmp_path, env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "k"},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "agreement with openai:teacher over 2 inputs with a valid reference" in lines[0]
    teacher = next(line for line in lines if line.startswith("openai:teacher"))
    assert teacher.split()[1:5] == ["2/3", "2/3", "0/3", "reference"]
    tuned = next(line for line in lines if line.startswith("offline:albums"))
    assert tuned.split()[1:4] == ["3/3", "3/3", "0/3"]
    assert json.loads(out.read_text())["reference"]["scored_inputs"] == 2
    page = html.read_text()
    assert "<td>openai:teacher</td>" in page and "<td>offline:albums</td>" in page
    assert f"wrote {html}" in result.stdout


def test_eval_refuses_bad_setups_with_one_line_errors(tmp_path):
    from structune.adapters import MANIFEST_FILE, AdapterManifest

    inputs, albums = eval_files(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    short = write_jsonl(tmp_path / "short.jsonl", albums[:2])
    invalid = write_jsonl(tmp_path / "invalid.jsonl", [albums[0], {"name": "no artist"}, albums[2]])
    manifest = AdapterManifest(
        id="cites-1", base_model="smollm2-135m", task="citations", dataset_hash="0",
        dataset_size=1, config={}, loss_history=[1.0], steps=1, tokens_trained=1,
        train_seconds=1.0,
    )  # fmt: skip
    (tmp_path / "adapters" / "cites-1").mkdir(parents=True)
    (tmp_path / "adapters" / "cites-1" / MANIFEST_FILE).write_text(manifest.model_dump_json())
    cases = [
        (["--inputs", str(empty), "--model", "offline:albums"], "no held-out inputs"),
        (
            ["--inputs", str(inputs), "--model", "offline:albums", "--gold", str(short)],
            "got 2 gold answers for 3 inputs",
        ),
        (
            ["--inputs", str(inputs), "--model", "offline:albums", "--gold", str(invalid)],
            "invalid.jsonl:2: not a valid Album for program 'album'",
        ),
        (
            ["--inputs", str(inputs), "--model", "cites-1"],
            "adapter cites-1 was trained for task 'citations', not 'album'",
        ),
    ]
    for args, message in cases:
        result = run_cli("eval", *args, env_home=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr


def test_record_after_a_permanent_failure_exits_0_reports_it_and_loses_nothing(tmp_path):
    from structune.tasks.albums import curated_albums

    known = [a["movie_name"] for a in curated_albums()[:2]]
    inputs = tmp_path / "movies.txt"
    inputs.write_text(f"{known[0]}\nNo Such Movie Anywhere\n{known[1]}\n")  # one unknown
    db = str(tmp_path / "d.sqlite")
    argv = ["record", "--inputs", str(inputs), "--teacher", "offline:albums", "--db", db]
    first = run_cli(*argv, env_home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"recorded 2 into a new dataset at {db} (2 valid, 0 invalid)" in first.stdout
    assert "the teacher failed on 1" in first.stdout and "only knows the movies" in first.stdout
    for _ in range(2):  # the one input that fails is asked again, alone, and fails again
        again = run_cli(*argv, env_home=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "recorded 0 (0 valid, 0 invalid); skipped 2" in again.stdout
        assert "the teacher failed on 1" in again.stdout
    listed = json.loads(run_cli("datasets", "--json", "--db", db, env_home=tmp_path).stdout)
    (task,) = listed["tasks"]
    assert (task["task"], task["examples"], task["valid"], task["failed"]) == ("album", 2, 2, 1)


def test_answers_invalid_for_the_program_warn_and_a_reimport_checks_them_again(tmp_path):
    from structune.tasks.albums import album_program, curated_albums

    lines = [
        {"messages": [*album_program.messages({"movie_name": a["movie_name"]}),
                      {"role": "assistant", "content": json.dumps(a["album"])}]}
        for a in curated_albums()[:3]
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "albums.jsonl", lines)
    db = ["--db", str(tmp_path / "d.sqlite")]
    wrong = run_cli("import", str(source), "--task", "mine", "--program", "citations", *db,
                    env_home=tmp_path)  # fmt: skip
    assert wrong.returncode == 0, wrong.stderr
    assert "warning: 3 of 3 answers are not valid against program 'citations'" in wrong.stderr
    right = run_cli("import", str(source), "--task", "mine", "--program", "album", *db,
                    env_home=tmp_path)  # fmt: skip
    assert right.returncode == 0 and "warning" not in right.stderr
    assert "0 examples" in right.stdout and "3 stored answers checked again" in right.stdout
    listed = json.loads(run_cli("datasets", "--json", *db, env_home=tmp_path).stdout)
    assert [(t["task"], t["valid"]) for t in listed["tasks"]] == [("mine", 3)]

    out = tmp_path / "out.jsonl"
    assert run_cli("export", str(out), *db, env_home=tmp_path).returncode == 0
    assert out.stat().st_mode & 0o077 == 0o644 & ~_umask() & 0o077  # readable as open() makes it

    removed = run_cli("datasets", "rm", "mine", *db, env_home=tmp_path)
    assert removed.returncode == 0 and "3 examples" in removed.stdout
    assert json.loads(run_cli("datasets", "--json", *db, env_home=tmp_path).stdout)["tasks"] == []


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_listings_as_json_and_an_adapter_removed(tmp_path):
    from structune.adapters import MANIFEST_FILE, AdapterManifest

    models = json.loads(run_cli("models", "--json", env_home=tmp_path).stdout)
    assert [m["name"] for m in models] == ["smollm2-135m", "qwen2.5-coder-0.5b"]
    assert json.loads(run_cli("adapters", "--json", env_home=tmp_path).stdout) == []
    manifest = AdapterManifest(
        id="a-1", base_model="smollm2-135m", task="album", dataset_hash="0", dataset_size=1,
        config={}, loss_history=[1.0], steps=1, tokens_trained=1, train_seconds=1.0,
    )  # fmt: skip
    (tmp_path / "adapters" / "a-1").mkdir(parents=True)
    (tmp_path / "adapters" / "a-1" / MANIFEST_FILE).write_text(manifest.model_dump_json())
    (listed,) = json.loads(run_cli("adapters", "--json", env_home=tmp_path).stdout)
    assert listed["id"] == "a-1" and listed["task"] == "album"
    removed = run_cli("adapters", "rm", "a-1", env_home=tmp_path)
    assert removed.returncode == 0 and "removed adapter a-1" in removed.stdout
    assert not (tmp_path / "adapters" / "a-1").exists()


def test_help_shows_the_defaults():
    record = subprocess.run(
        [sys.executable, "-m", "structune.cli", "record", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    flat = " ".join(record.split())
    assert "(default: album)" in flat and "(default: 8)" in flat and "(default: 1024)" in flat
    assert "(default: None)" not in flat and "(default: False)" not in flat


def test_a_mistyped_base_fails_at_once_listing_the_built_ins(tmp_path):
    import time

    started = time.perf_counter()
    result = run_cli("train", "--jsonl", str(tmp_path / "x.jsonl"), "--base", "nosuch-model",
                     env_home=tmp_path)  # fmt: skip
    assert time.perf_counter() - started < 5
    assert result.returncode == 1 and "built-in models: smollm2-135m" in result.stderr


def test_demo_training_flags_left_out_take_the_album_recipe():
    from structune.cli.demo import _album_training
    from structune.cli.train import train_config
    from structune.tasks.albums import ALBUM_TRAINING
    from structune.train.config import TrainConfig

    parser = build_parser()
    assert _album_training(parser.parse_args(["demo"])) == ALBUM_TRAINING
    given = _album_training(parser.parse_args(["demo", "--lora-r", "8", "--unlikelihood", "0"]))
    assert (given.lora_r, given.lora_alpha, given.unlikelihood) == (8, 16, 0.0)
    assert given.epochs == ALBUM_TRAINING.epochs
    assert train_config(parser.parse_args(["train", "--task", "album"])) == TrainConfig()


def test_demo_and_questions_take_the_sampling_flags():
    from structune.cli.args import sampling_from
    from structune.llms.sampling import GREEDY, Sampling

    parser = build_parser()
    assert sampling_from(parser.parse_args(["demo"])) == GREEDY
    flags = ["--temperature", "0.7", "--seed", "1", "--top-p", "0.9"]
    wanted = Sampling(temperature=0.7, top_p=0.9, seed=1)
    assert sampling_from(parser.parse_args(["demo", *flags])) == wanted
    asked = parser.parse_args(["questions", "--index", "i", "--out", "q", "--llm", "m", *flags])
    assert sampling_from(asked) == wanted


def test_questions_from_an_llm_decode_as_the_sampling_flags_say(
    test_paper_pdf, tiny_model_dir, tmp_path
):
    index = tmp_path / "index"
    big_chunks = ["--chunk-size", "2048"]  # few chunks: few answers to write
    ingested = run_cli(
        "ingest", str(test_paper_pdf), "--index", str(index), *big_chunks, env_home=tmp_path
    )
    assert ingested.returncode == 0, ingested.stderr

    def questions(*flags: str) -> str:
        out = tmp_path / f"questions-{'-'.join(flags) or 'greedy'}.jsonl"
        spec = ["--llm", f"local:{tiny_model_dir}", *flags]
        written = run_cli(
            "questions", "--index", str(index), "--out", str(out), *spec, env_home=tmp_path
        )
        assert written.returncode == 0, written.stderr
        return out.read_text()

    # The tiny random model writes noise, so any flag that reached it shows in the file:
    # sampled, not greedy; and one seed, one file (chunks written one at a time or four).
    sampled = questions("--temperature", "1.0", "--seed", "7")
    assert questions("--temperature", "1.0", "--seed", "7", "--workers", "1") == sampled
    assert questions() != sampled
