"""Argument types, shared flags and helpers of the subcommands.

Every value is checked here, as argparse reads it, so a bad number or path is refused in
one line before any model loads.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from structune.errors import UserError

if TYPE_CHECKING:
    from structune.llms.sampling import Sampling


def positive(text: str) -> int:
    """A positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative(text: str) -> int:
    """Zero or a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_number(text: str) -> float:
    """A finite number above zero (not NaN, not inf)."""
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def non_negative_number(text: str) -> float:
    """A finite number, zero or above."""
    value = _number(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def temperature(text: str) -> float:
    """A sampling temperature: 0 (greedy) up to 2, as the OpenAI API takes it."""
    value = _number(text)
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, got {text}")
    return value


def top_p(text: str) -> float:
    """A nucleus: a probability mass in (0, 1]."""
    value = _number(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def sampling_flags(parser: argparse.ArgumentParser) -> None:
    """`--temperature --top-p --seed --repetition-penalty`: how the model picks tokens."""
    parser.add_argument(
        "--temperature", type=temperature, default=0.0, help="0 decodes greedily; up to 2"
    )
    parser.add_argument(
        "--top-p", type=top_p, default=1.0, help="sample from this much probability mass"
    )
    parser.add_argument(
        "--seed", type=non_negative, help="seed the sampling, so a rerun gives the same answers"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=positive_number,
        default=1.0,
        help="above 1 discourages repeating tokens, greedy or sampled; 1 is none",
    )


def sampling_from(args: argparse.Namespace) -> Sampling:
    """The `structune.Sampling` that `sampling_flags` read."""
    from structune.llms.sampling import Sampling

    return Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        repetition_penalty=args.repetition_penalty,
    )


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    value = positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def output_file(path: Path | None) -> None:
    """Refuse an output path that cannot be written (a folder, no permission) up front."""
    if path is not None:
        from structune.fileio import check_writable

        check_writable(path)


def program_flags(parser: argparse.ArgumentParser) -> None:
    """`--program` and `--template`, for the commands that run a program over inputs."""
    parser.add_argument(
        "--program",
        default="album",
        help="built-in name (album, citations), or module:attribute of a structune.Program "
        "or of a Pydantic model",
    )
    parser.add_argument(
        "--template",
        help="with --program naming a Pydantic model: the prompt template, with {variables} "
        "(default: '{input}')",
    )


def relax_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--relax",
        action="store_true",
        help="with --constrained: a schema with keywords no grammar enforces (uniqueItems on "
        "objects, not, propertyNames) decodes under a looser grammar; every answer is still "
        "checked against the whole schema and decoded again on a violation",
    )


def check_relax(args: argparse.Namespace) -> None:
    if args.relax and not args.constrained:
        raise UserError("--relax loosens the grammar of --constrained: add --constrained")


def base_url_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        help="the API root for openai:MODEL specs, e.g. http://127.0.0.1:8000/v1 "
        "(default: $OPENAI_BASE_URL, else OpenAI's)",
    )


def load_models(specs: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from structune.llms.spec import llm_from_spec
    from structune.tasks import OFFLINE_TEACHERS

    if args.base_url is not None and not any(s.startswith("openai:") for s in specs):
        raise UserError(f"--base-url is for openai:MODEL specs; none among {', '.join(specs)}")

    def base_url(spec: str) -> str | None:
        return args.base_url if spec.startswith("openai:") else None

    return {
        spec: llm_from_spec(spec, base_url=base_url(spec), named=OFFLINE_TEACHERS) for spec in specs
    }


def db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", type=Path, help="dataset file (default: $STRUCTUNE_DB or the user data directory)"
    )


def open_store(args: argparse.Namespace, *, create: bool) -> Any:
    """The dataset at `--db` (or the default). Commands that only read need it to exist:
    a mistyped path is an error there, not a new empty dataset."""
    from structune.record.store import DatasetStore

    if not create:
        from structune.paths import default_db_path

        path = args.db if args.db is not None else default_db_path()
        if not Path(path).is_file():
            where = "--db" if args.db is not None else "the default dataset"
            raise UserError(
                f"no dataset at {path} ({where}); record or import into it first, or check the path"
            )
    return DatasetStore(args.db)


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default, where there is one worth showing (not for
    switches that are off, nor for flags whose absence means "none")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False
        if "%(default)" in text or unset or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"
