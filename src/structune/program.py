"""Programs: a prompt template plus a Pydantic output model.

A `Program` renders its template into chat messages that end with format instructions
derived from the output model's JSON Schema (the role of LlamaIndex's
`PydanticOutputParser`), and turns a model's text back into a validated object. Parsing
tolerates what chat models wrap around JSON (code fences, a sentence before or after)
but nothing else: an answer that is not a valid instance raises `InvalidOutput` with the
raw text, so a caller never gets a half-right object. Fields marked `Extracted()` must also
be copied from the inputs (`structune.constrain.extractive`): given the inputs, `parse`
checks them, and constrained decoding holds them to the inputs' text.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

import pydantic

from structune.constrain.checked import relaxed
from structune.constrain.extractive import (
    ExtractedField,
    bind_sources,
    check_extracted,
    extracted_fields,
    select_sources,
    strip_extractive,
)
from structune.errors import InvalidOutput, UserError
from structune.hashing import content_hash
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message

T = TypeVar("T", bound=pydantic.BaseModel)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant that answers with a single JSON object."

FORMAT_INSTRUCTIONS = (
    "\n\nHere's a JSON schema to follow:\n{schema}\n\n"
    "Output a valid JSON object but do not repeat the schema."
)

_CODE_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json_object(text: str) -> dict[str, Any]:
    """Return the first JSON object in `text`, looking inside code fences first.

    Raises:
        InvalidOutput: when the text holds no decodable JSON object.
    """
    decoder = json.JSONDecoder()
    for candidate in [*(m.group(1) for m in _CODE_FENCE.finditer(text)), text]:
        for start in (i for i, char in enumerate(candidate) if char == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise InvalidOutput(text, "no JSON object found in the output")


def canonical_json(value: Any) -> str:
    """JSON as a grammar-constrained decoder writes it: compact, UTF-8 (no \\u escapes).

    Training targets use this form so that the tuned model learns the same bytes that
    constrained decoding allows; it equals pydantic's `model_dump_json()`.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def schema_hash(schema: Mapping[str, Any]) -> str:
    """A short, stable identity of a JSON Schema (key order does not matter)."""
    return content_hash(schema, length=16, compact=True)


@dataclass(frozen=True)
class Program(Generic[T]):
    """A prompt template with named `{variables}` and the Pydantic model its answer must fit.

    Args:
        template: the user prompt, with `str.format` fields such as `{movie_name}`.
        output_cls: the Pydantic model the answer is validated against.
        name: the task name under which examples are recorded; defaults to the model's name.
        system_prompt: the system message put before the prompt.
    """

    template: str
    output_cls: type[T]
    name: str = ""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    variables: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if not (
            isinstance(self.output_cls, type) and issubclass(self.output_cls, pydantic.BaseModel)
        ):
            raise UserError(
                f"output_cls must be a Pydantic model class (a subclass of pydantic.BaseModel), "
                f"got {self.output_cls!r}"
            )
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None}
        except ValueError as exc:
            raise UserError(f"template is not a valid format string: {exc}") from None
        if any(not f.isidentifier() for f in fields):
            raise UserError(
                f"template fields must be plain names like {{movie_name}}, got {sorted(fields)}; "
                "write literal braces as {{ and }}"
            )
        object.__setattr__(self, "variables", frozenset(fields))
        if not self.name:
            object.__setattr__(self, "name", self.output_cls.__name__.lower())
        for f in self.extracted:
            if f.marker.source is not None and f.marker.source not in self.variables:
                raise UserError(
                    f"{f.path} is extracted from {f.marker.source!r}, which is not a template "
                    f"variable (variables: {', '.join(sorted(self.variables)) or 'none'})"
                )

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        return self.output_cls.model_json_schema()

    @cached_property
    def extracted(self) -> list[ExtractedField]:
        """The fields of the output that must be copied from the inputs."""
        return extracted_fields(self.json_schema)

    @cached_property
    def schema_hash(self) -> str:
        return schema_hash(self.json_schema)

    def render(self, inputs: Mapping[str, Any]) -> str:
        """The user prompt for `inputs`, without format instructions."""
        missing = sorted(self.variables - inputs.keys())
        if missing:
            raise UserError(
                f"template variable(s) {', '.join(missing)} missing from the inputs "
                f"(given: {', '.join(sorted(inputs)) or 'none'})"
            )
        return self.template.format(**{k: inputs[k] for k in self.variables})

    def messages(self, inputs: Mapping[str, Any]) -> list[Message]:
        """The chat messages that ask a model for an answer to `inputs`.

        The schema in them has no extraction markers: they instruct the decoder and the
        check, and without them the prompt is the same in every decoding mode, so one
        dataset and one adapter serve all of them.
        """
        schema = json.dumps(strip_extractive(self.json_schema), ensure_ascii=False)
        user = self.render(inputs) + FORMAT_INSTRUCTIONS.format(schema=schema)
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": user},
        ]

    def sources(self, inputs: Mapping[str, Any]) -> dict[str, str]:
        """The input texts that extracted fields copy from (none when there are none).

        Raises:
            UserError: an input that an extracted field copies from is missing or empty.
        """
        if not self.extracted:
            return {}
        return select_sources(
            self.json_schema, {v: inputs[v] for v in self.variables & inputs.keys()}
        )

    def decoding_schema(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The schema to decode the answer to `inputs` under: with extracted fields, it
        carries the texts they copy from, so a grammar can hold them to those texts."""
        if not self.extracted:
            return self.json_schema
        return bind_sources(self.json_schema, self.sources(inputs))

    def parse_completion(
        self, completion: Completion, inputs: Mapping[str, Any] | None = None
    ) -> T:
        """`parse` of a model's completion: an answer whose grammar did not hold the whole
        schema and that still broke it after re-sampling (`Completion.schema_check`) is
        invalid however well it parses.

        Raises:
            InvalidOutput: as `parse`, or with the validator's message for such an answer.
        """
        check = completion.schema_check
        if check is not None and check.violation is not None:
            raise InvalidOutput(
                completion.text,
                f"{check.violation} (the full schema, after {check.resamples} re-samples)",
            )
        return self.parse(completion.text, inputs)

    def parse(self, text: str, inputs: Mapping[str, Any] | None = None) -> T:
        """Validate a model's text as an instance of `output_cls`.

        With `inputs`, extracted fields must also be copied from them; without, only the
        schema is checked.

        Raises:
            InvalidOutput: no JSON object, one that does not validate, or an extracted value
                that is not in the inputs (the reason names the field and the value).
            UserError: an input that an extracted field copies from is missing or empty.
        """
        data = extract_json_object(text)
        try:
            parsed = self.output_cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise InvalidOutput(text, short_validation_error(exc)) from None
        if inputs is not None and self.extracted:
            problems = check_extracted(self.json_schema, data, self.sources(inputs))
            if problems:
                more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
                raise InvalidOutput(
                    text,
                    "; ".join(problems[:5])
                    + more
                    + "; copy these values exactly as the input writes them",
                )
        return parsed

    def run(
        self,
        llm: LLM,
        inputs: Mapping[str, Any],
        *,
        max_retries: int = 0,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        constrained: bool = False,
        relax: bool = False,
    ) -> T:
        """Ask `llm` for an answer and validate it.

        With `max_retries`, an invalid answer is shown back to the model with its error
        and the model answers again, at most that many more times. With `constrained`, the
        model decodes under a grammar compiled from the schema (local models) or gets the
        schema as `response_format` (OpenAI-compatible servers); the answer is validated all
        the same, since an answer cut off by `max_tokens` is still invalid. Extracted fields
        are checked against `inputs`, and a local model decodes them as copies of the inputs.
        `sampling` picks the tokens (greedy by default); under a grammar a sampled answer
        is held to the schema all the same.

        Distinct list items (`Distinct`, `uniqueItems` on strings) are held while a local
        model decodes. A schema keyword that no grammar can enforce (`uniqueItems` on numbers
        or objects, a `not` without a complement) is refused unless `relax`: then the grammar
        leaves it out, and the local model's answer is checked against the full schema and
        decoded again on a violation (`structune.constrain.checked`).

        Raises:
            InvalidOutput: the last answer was still invalid (for a local model under a
                grammar, against the full schema, with the validator's message).
            UserError: the schema needs `relax=True`, or `relax` without `constrained`.
        """
        if max_retries < 0:
            raise UserError(f"max_retries must be 0 or more, got {max_retries}")
        if relax and not constrained:
            raise UserError(
                "relax=True loosens the grammar of constrained decoding: pass constrained=True too"
            )
        messages = self.messages(inputs)
        self.sources(inputs)  # a missing or empty source fails before the model is asked
        schema = self.decoding_schema(inputs) if constrained else None
        if schema is not None and relax:
            schema = relaxed(schema)
        for attempt in range(max_retries + 1):
            completion = llm.complete(
                messages, max_tokens=max_tokens, sampling=sampling, json_schema=schema
            )
            text = completion.text
            try:
                return self.parse_completion(completion, inputs)
            except InvalidOutput as exc:
                if attempt == max_retries:
                    raise
                messages = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": f"That answer is not valid: {exc.reason}. "
                        "Reply with only the corrected JSON object.",
                    },
                ]
        raise AssertionError("unreachable")  # the loop always returns or raises


def short_validation_error(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more
