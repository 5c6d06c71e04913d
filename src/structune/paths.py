"""Where structune keeps its files.

Everything lives under one home directory: the user data directory by default,
`STRUCTUNE_HOME` to move it (tests point it at a temporary folder). The dataset file can
be moved on its own with `STRUCTUNE_DB` or a `--db` flag.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    override = os.environ.get("STRUCTUNE_HOME")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("structune"))


def default_db_path() -> Path:
    override = os.environ.get("STRUCTUNE_DB")
    return Path(override).expanduser() if override else home() / "datasets.sqlite"


def models_dir() -> Path:
    return home() / "models"


def adapters_dir() -> Path:
    return home() / "adapters"
