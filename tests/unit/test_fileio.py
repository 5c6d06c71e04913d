from pathlib import Path

import pytest

from structune.errors import StructuneError
from structune.fileio import write_directory_atomically


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "index"
    write_directory_atomically(target, lambda d: (d / "old").write_text("1"))
    write_directory_atomically(target, lambda d: (d / "new").write_text("2"))
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no staging or old folder left


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "index"
    write_directory_atomically(target, lambda d: (d / "a").write_text("old"))
    rename = Path.rename

    def failing(self: Path, to: Path) -> Path:
        if self.name.startswith(".index.partial-"):
            raise OSError(28, "No space left on device")
        return rename(self, to)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(StructuneError, match="could not write"):
        write_directory_atomically(target, lambda d: (d / "a").write_text("new"))
    assert (target / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
