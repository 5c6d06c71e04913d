"""The `structune` command: one thin subcommand per library call, grouped by stage.

`record` (record, import, export, datasets), `train` (train, adapters), `evaluate`
(compare, eval, prompt), `serve` (serve, export-adapter, models), `rag` (ingest,
questions, retrieve, ask) and `demo`. Parsing flags and printing results is all that
happens here; torch and transformers are imported only by the subcommands that need them,
so `structune --help` stays fast. Every flag is checked as it is parsed, before any model
loads. Errors structune raises on purpose print as one line and exit with status 1; so do
file-system errors (with the path and the reason). Anything else is a bug: one line that
says so, and the traceback with STRUCTUNE_DEBUG=1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from structune.cli import args, demo, evaluate, rag, record, serve, train
from structune.errors import StructuneError

STAGES = (demo, record, train, evaluate, serve, rag)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(quiet=args.quiet)
    # Deprecation notices from the libraries underneath are for us, not for users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        args.handler(args)
    except StructuneError as exc:
        return _fail("\n".join(str(exc).splitlines()[:3]))
    except KeyboardInterrupt:
        print("interrupted; recorded work is kept", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system said no: a full disk, a permission
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}")
    except Exception as exc:
        if os.environ.get("STRUCTUNE_DEBUG"):
            raise
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (a bug in structune; rerun with "
            "STRUCTUNE_DEBUG=1 for the traceback and report it)"
        )
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _configure_logging(*, quiet: bool) -> None:
    # structune's progress lines at INFO; the libraries underneath only at WARNING, so a
    # step is said once (sentence-transformers would repeat "loading the model" otherwise).
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("structune").setLevel(logging.WARNING if quiet else logging.INFO)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line, like every other error, pointing at the help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="structune",
        description="Teach a small local model to answer in your schema: "
        "record a teacher, LoRA fine-tune, compare.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: object, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            formatter_class=args.DefaultsFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    for stage in STAGES:
        stage.add_commands(command)
    return parser
