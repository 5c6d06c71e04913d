"""What several benchmarks share: the `--papers DIR` folder and the paper inputs read from it.

Benchmarks run as scripts (`.venv/bin/python benchmarks/NAME.py`), so Python puts this
folder, not the repository root, on the module path; importing this module puts the root
there too, for the `research` package beside `benchmarks/`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from structune.paths import home
from structune.rag.dataset import DocumentInputs, document_inputs

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def add_papers_flag(parser: argparse.ArgumentParser, help: str, *, required: bool = True) -> None:
    """`--papers DIR`: the folder the papers are read from as DIR/<name>.pdf (this workplace
    keeps them in ../shared/data/papers; a user's clone has none, so it is always given)."""
    parser.add_argument("--papers", type=Path, metavar="DIR", required=required, help=help)


def check_papers(parser: argparse.ArgumentParser, folder: Path, files: Iterable[str]) -> None:
    """Stop with a usage error naming the first of `files` that `folder` lacks."""
    for name in files:
        if not (folder / name).is_file():
            parser.error(f"--papers {folder}: no {name} there")


def paper_inputs(
    papers: Path, paper: str, size: int, overlap: int, *, retrieve: bool
) -> DocumentInputs:
    """Questions over `papers`/`paper`.pdf cut into `size`-token chunks overlapping by
    `overlap`, each with its own chunk as its context, or with the chunk it retrieves
    (`retrieve`). The index is kept in the structune home under the paper and cut, so the
    benchmarks that read the same cut share it."""
    return document_inputs(
        papers / f"{paper}.pdf",
        home() / "rag" / f"{paper}-{size}-{overlap}",
        chunk_size=size,
        chunk_overlap=overlap,
        retrieve_context=retrieve,
        progress=False,
    )
