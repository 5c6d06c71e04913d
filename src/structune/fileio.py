"""Writing files so that a crash leaves either the old file or the complete new one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from structune.errors import StructuneError, UserError


def check_writable(path: str | Path) -> Path:
    """Refuse an output path that cannot be written, before any work goes into its content.

    Raises:
        UserError: `path` is a folder, or its folder cannot be created or written to.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the path of a file to write")
    folder = path.parent
    while not folder.exists():  # the nearest folder that exists is where one gets created
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: no write permission in {folder}")
    return path


def write_atomically(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to a temporary file beside `path`, fsync it, rename it over `path`.

    The file gets the mode a plain `open(path, "w")` would give it (the umask's), or the
    mode of the file it replaces.

    Raises:
        UserError: `path` cannot be written (see `check_writable`, or the OS's reason).
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _new_file_mode(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)  # mkstemp's 0600 would hide exports from others
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def _new_file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` to disk, then the folders' own entries."""
    paths = sorted(folder.rglob("*"))
    for path in [p for p in paths if p.is_file()] + [p for p in paths if p.is_dir()] + [folder]:
        _fsync(path)


def write_directory_atomically(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with `fill(staging)` beside `path`, flush it to disk, rename it to `path`.

    A crash leaves the old folder (if any) or the complete new one, plus at worst a
    dot-named leftover (`.NAME.partial-PID`, `.NAME.old-PID`) that readers skip. A folder
    already at `path` is replaced; a failure before the new one is in place puts it back.

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
        _swap_in(staging, path, aside)
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


def _swap_in(staging: Path, path: Path, aside: Path) -> None:
    """Rename `staging` to `path`, moving a folder already there to `aside` first and back
    if the rename fails, so that `path` is never left empty by an error."""
    if not path.exists():
        staging.rename(path)
        return
    path.rename(aside)
    try:
        staging.rename(path)
    except BaseException:
        aside.rename(path)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
