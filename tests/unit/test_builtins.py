"""Built-in base models: parts found without importing them, joined once, checked, listed.

The join is tested on small packages written here, put on sys.path as pip would install
them; the real Qwen2.5-Coder-0.5B (the `qwen` extra) runs in `-m qwen` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import replace

import pytest

from structune import UserError
from structune.cli import main
from structune.models import loading
from structune.models.loading import (
    BUILTIN_MODELS,
    BuiltinModel,
    builtin_gguf_path,
    builtin_installed,
    check_model_spec,
)

QWEN = "qwen2.5-coder-0.5b"


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A built-in `split-test` whose three parts lie in three installed packages."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + bytes(range(256)) * 40, b"second part" * 300, b"last"]
    for i, chunk in enumerate(chunks, start=1):
        (site / f"split_part{i}" / "data").mkdir(parents=True)
        (site / f"split_part{i}" / "__init__.py").write_text("raise ImportError('not imported')")
        (site / f"split_part{i}" / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    joined = b"".join(chunks)
    model = BuiltinModel(
        description="a model in three parts",
        architecture="llama",
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
        parts=tuple((f"split_part{i}", f"data/part{i:02d}.bin") for i in range(1, 4)),
        install="'structune[split]'",
    )
    monkeypatch.setitem(BUILTIN_MODELS, "split-test", model)
    monkeypatch.setattr(loading, "models_dir", lambda: tmp_path / "models")
    return site, joined


def test_parts_are_joined_once_into_the_models_cache(split_model, tmp_path):
    _, joined = split_model
    assert builtin_installed("split-test")
    path = builtin_gguf_path("split-test")
    assert path == tmp_path / "models" / "split-test.gguf"
    assert path.read_bytes() == joined
    assert [p.name for p in path.parent.iterdir()] == ["split-test.gguf"]  # no temp file left
    first = path.stat().st_mtime_ns
    assert builtin_gguf_path("split-test") == path and path.stat().st_mtime_ns == first
    assert "split_part1" not in sys.modules  # found, never imported


def test_parts_that_join_to_another_file_are_refused_and_nothing_is_kept(split_model, tmp_path):
    site, _ = split_model
    (site / "split_part2" / "data" / "part02.bin").write_bytes(b"tampered" * 450)
    with pytest.raises(UserError, match=r"not the pinned .*pip install --force-reinstall"):
        builtin_gguf_path("split-test")
    assert not any((tmp_path / "models").iterdir())


def test_a_truncated_cached_join_is_joined_again(split_model, tmp_path):
    _, joined = split_model
    path = builtin_gguf_path("split-test")
    path.write_bytes(joined[:100])
    assert builtin_gguf_path("split-test").read_bytes() == joined


def test_a_missing_part_says_what_to_install(split_model):
    site, _ = split_model
    os.remove(site / "split_part3" / "data" / "part03.bin")
    assert not builtin_installed("split-test")
    with pytest.raises(UserError) as error:
        check_model_spec("split-test")
    assert str(error.value) == (
        "built-in model 'split-test' is not installed (split-part3 missing): "
        "pip install 'structune[split]'"
    )


def without_qwen_extra(monkeypatch):
    absent = tuple((f"{package}_absent", file) for package, file in BUILTIN_MODELS[QWEN].parts)
    monkeypatch.setitem(BUILTIN_MODELS, QWEN, replace(BUILTIN_MODELS[QWEN], parts=absent))


def test_training_on_qwen_without_the_extra_says_in_one_line_what_to_install(
    monkeypatch, tmp_path, capsys
):
    without_qwen_extra(monkeypatch)
    data = tmp_path / "a.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert main(["train", "--jsonl", str(data), "--base", QWEN]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "pip install 'structune[qwen]'" in line and QWEN in line


def test_models_lists_every_builtin_with_size_architecture_and_whether_installed(
    monkeypatch, capsys
):
    without_qwen_extra(monkeypatch)
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(BUILTIN_MODELS)
    assert rows[QWEN]["architecture"] == "qwen2" and rows[QWEN]["size_bytes"] == 491_400_064
    assert rows[QWEN]["installed"] is False
    assert rows[QWEN]["install"] == "pip install 'structune[qwen]' (in a clone: scripts/setup qwen)"
    assert rows["smollm2-135m"]["installed"] is True
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "qwen2.5-coder-0.5b   qwen2     491 MB  not installed: pip install" in listing


def test_each_builtin_extra_installs_its_parts():
    # scripts/demo --base NAME installs the model's extra: it must exist and name its parts
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for name, model in BUILTIN_MODELS.items():
        wanted = {package.replace("_", "-") for package, _ in model.parts}
        pinned = extras[model.extra] if model.extra else pyproject["project"]["dependencies"]
        listed = {re.split(r"[\[<>=!~ ]", spec, maxsplit=1)[0] for spec in pinned}
        assert wanted <= listed, (name, wanted - listed)
