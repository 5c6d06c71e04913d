"""One answer from one model, as `structune prompt` gives it: the quickest way to see what
a model (a base, a tuned adapter, an API model) writes for a prompt, plainly or in JSON.

With a JSON Schema the prompt gets the same format instructions a program's messages end
with, and the answer must parse and validate against the schema (`jsonschema`); with a
program, the text fills its one variable (or is a JSON object of its variables) and the
answer is validated as `Program.parse` validates it. Either way, `constrained` decodes
under the schema's grammar (local models) or sends it as `response_format` (API models).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from structune.constrain.checked import relaxed
from structune.errors import InvalidOutput, UserError
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Message
from structune.program import (
    DEFAULT_SYSTEM_PROMPT,
    FORMAT_INSTRUCTIONS,
    canonical_json,
    extract_json_object,
)


def prompt_once(
    llm: LLM,
    text: str,
    *,
    schema: Mapping[str, Any] | None = None,
    program: str | None = None,
    template: str | None = None,
    constrained: bool = False,
    relax: bool = False,
    max_tokens: int = 512,
    sampling: Sampling = GREEDY,
) -> str:
    """The model's answer to `text`: its raw text, or the validated JSON (compact).

    `relax` (with `constrained`) lets a schema with keywords no grammar enforces decode
    under a looser grammar; the answer is still checked against all of it.

    Raises:
        InvalidOutput: with a schema or a program, the answer does not validate.
        UserError: a bad schema, program or inputs.
    """
    if schema is not None and program is not None:
        raise UserError("give a schema or a program, not both")
    if relax and not constrained:
        raise UserError("relax loosens the grammar of constrained decoding: add constrained")
    if program is not None:
        return _with_program(llm, text, program, template, constrained, relax, max_tokens, sampling)
    messages: list[Message] = [{"role": "user", "content": text}]
    if schema is None:
        return llm.complete(messages, max_tokens=max_tokens, sampling=sampling).text
    _check_schema(schema)
    instructions = FORMAT_INSTRUCTIONS.format(schema=json.dumps(schema, ensure_ascii=False))
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": text + instructions},
    ]
    answer = llm.complete(
        messages,
        max_tokens=max_tokens,
        sampling=sampling,
        json_schema=(relaxed(schema) if relax else schema) if constrained else None,
    ).text
    value = extract_json_object(answer)
    _validate(value, schema, answer)
    return canonical_json(value)


def _with_program(
    llm: LLM,
    text: str,
    spec: str,
    template: str | None,
    constrained: bool,
    relax: bool,
    max_tokens: int,
    sampling: Sampling,
) -> str:
    from structune.tasks import load_program

    program = load_program(spec, template=template)
    inputs = _program_inputs(text, program.variables)
    schema = program.decoding_schema(inputs) if constrained else None
    if schema is not None and relax:
        schema = relaxed(schema)
    completion = llm.complete(
        program.messages(inputs), max_tokens=max_tokens, sampling=sampling, json_schema=schema
    )
    return program.parse_completion(completion, inputs).model_dump_json()


def _program_inputs(text: str, variables: frozenset[str]) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        try:
            inputs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"the prompt looks like JSON but is not ({exc.msg})") from None
        if isinstance(inputs, dict):
            return inputs
    if len(variables) != 1:
        raise UserError(
            f"the program has the variables {sorted(variables)}: give them as a JSON object"
        )
    (variable,) = variables
    return {variable: text}


def _check_schema(schema: Mapping[str, Any]) -> None:
    from jsonschema import SchemaError, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise UserError(f"not a valid JSON Schema: {exc.message}") from None


def _validate(value: Any, schema: Mapping[str, Any], text: str) -> None:
    from jsonschema import validators

    error = next(iter(validators.validator_for(schema)(schema).iter_errors(value)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidOutput(text, f"{where}: {error.message}")
