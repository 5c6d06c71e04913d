"""The CLI: fast help, one-line errors, every command documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from structune.cli import build_parser

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env_home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "STRUCTUNE_HOME": str(env_home)}
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
