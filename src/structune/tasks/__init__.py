"""Ready-made tasks, and how a program and a task's offline teacher are named on the
command line."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from structune.errors import UserError
from structune.program import Program

if TYPE_CHECKING:
    from structune.llms.base import LLM

BUILTIN_PROGRAMS = {
    "album": "structune.tasks.albums:album_program",
    "citations": "structune.tasks.citations:citation_program",
}


def _curated_album_teacher() -> LLM:
    from structune.tasks.albums import curated_teacher

    return curated_teacher()


def _rule_based_citation_teacher() -> LLM:
    from structune.llms.callable import CallableLLM
    from structune.tasks.citations import citation_teacher

    return CallableLLM(citation_teacher, model_id="rules:citations")


OFFLINE_TEACHERS: dict[str, Callable[[], LLM]] = {
    "offline:albums": _curated_album_teacher,
    "offline:citations": _rule_based_citation_teacher,
}
"""The built-in tasks' teachers that answer without a model, by the spec naming them on
the command line; give them to `structune.llms.spec.llm_from_spec(spec, named=...)`."""


DEFAULT_TEMPLATE = "{input}"
"""The template of a program made from a plain Pydantic model: the input is the prompt."""


def load_program(spec: str, *, template: str | None = None) -> Program[Any]:
    """A built-in program name (`album`), or `package.module:attribute` naming a
    `structune.Program` or a Pydantic model (made into a program with `template`, by
    default `DEFAULT_TEMPLATE`, named after the model)."""
    target = BUILTIN_PROGRAMS.get(spec, spec)
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise UserError(
            f"unknown program {spec!r}; use a built-in ({', '.join(BUILTIN_PROGRAMS)}) "
            "or module:attribute pointing at a structune.Program or a Pydantic model"
        )
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load program {spec!r}: {exc}") from None
    if isinstance(found, type) and issubclass(found, pydantic.BaseModel):
        return Program(template or DEFAULT_TEMPLATE, found, name=found.__name__.lower())
    if not isinstance(found, Program):
        raise UserError(
            f"{spec!r} is a {type(found).__name__}, not a structune.Program or a Pydantic model"
        )
    if template is not None:
        raise UserError(f"{spec!r} is a Program with its own template; drop --template")
    return found


def read_inputs(path: str | Path, program: Program[Any]) -> list[dict[str, Any]]:
    """Inputs from a JSONL file of objects or, for a one-variable program, a text file with
    one value per line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the inputs file (JSONL, or one per line)")
    if not path.is_file():
        raise UserError(f"inputs file {path} not found")
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if path.suffix.lower() not in (".jsonl", ".json"):
        if len(program.variables) != 1:
            raise UserError(
                f"{path}: a plain text inputs file needs a one-variable program; "
                f"{program.name} has {sorted(program.variables)}; use JSONL objects"
            )
        (variable,) = program.variables
        return [{variable: line.strip()} for _, line in lines]
    inputs = []
    for number, line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise UserError(f"{path}:{number}: expected a JSON object of input variables")
        inputs.append(item)
    return inputs
