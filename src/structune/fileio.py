"""Writing files so that a crash leaves either the old file or the complete new one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from structune.errors import StructuneError


def write_atomically(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to a temporary file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` to disk, then the folders' own entries."""
    paths = sorted(folder.rglob("*"))
    for path in [p for p in paths if p.is_file()] + [p for p in paths if p.is_dir()] + [folder]:
        _fsync(path)


def write_directory_atomically(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with `fill(staging)` beside `path`, flush it to disk, rename it to `path`.

    A crash leaves the old folder (if any) or the complete new one, plus at worst a
    dot-named leftover (`.NAME.partial-PID`, `.NAME.old-PID`) that readers skip. A folder
    already at `path` is replaced.

    Raises:
        StructuneError: writing failed (a full disk, a file-size limit, no permission); the
            message names `path`, and the staging folder is removed.
    """
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        fill(staging)
        fsync_tree(staging)
        if path.exists():
            path.rename(aside)
        staging.rename(path)
        _fsync(path.parent)
    except Exception as exc:  # whatever raised it (OSError, a library's own I/O error type)
        shutil.rmtree(staging, ignore_errors=True)
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        raise StructuneError(
            f"could not write {path}: {exc}; check free disk space ({free / 2**20:.0f} MiB "
            "free there) and write permission, then try again"
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
