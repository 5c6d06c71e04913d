"""`structune prompt` and `prompt_once`: one answer, plain or validated JSON, from any model."""

from __future__ import annotations

import json

import pydantic
import pytest

from structune import CallableLLM, InvalidOutput, UserError
from structune.prompting import prompt_once
from structune.tasks import load_program


class Person(pydantic.BaseModel):
    """A module-level Pydantic model, as `--program tests.test_prompting:Person` names it."""

    name: str
    age: int


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def echo(answer: str) -> CallableLLM:
    seen: list[list[dict[str, str]]] = []

    def fn(messages):
        seen.append(list(messages))
        return answer

    llm = CallableLLM(fn, model_id="echo")
    llm.seen = seen  # type: ignore[attr-defined]
    return llm


def test_plain_text_comes_back_as_the_model_wrote_it():
    llm = echo("Hello there.")
    assert prompt_once(llm, "hi") == "Hello there."
    assert llm.seen == [[{"role": "user", "content": "hi"}]]


def test_a_schema_is_given_in_the_prompt_and_the_answer_validated_against_it():
    llm = echo('Sure: {"n": 3}')
    assert prompt_once(llm, "a number", schema=SCHEMA) == '{"n":3}'
    assert json.dumps(SCHEMA) in llm.seen[0][-1]["content"]
    with pytest.raises(InvalidOutput, match="n: 'x' is not of type 'integer'"):
        prompt_once(echo('{"n": "x"}'), "a number", schema=SCHEMA)
    with pytest.raises(UserError, match="not a valid JSON Schema"):
        prompt_once(echo("{}"), "a number", schema={"type": 5})


def test_a_plain_pydantic_model_is_a_program_with_the_default_template():
    program = load_program("test_prompting:Person")
    assert (program.name, program.template) == ("person", "{input}")
    assert load_program("test_prompting:Person", template="Who is {who}?").variables == {"who"}
    llm = echo('{"name": "Ada", "age": 36}')
    assert prompt_once(llm, "Ada Lovelace", program="test_prompting:Person") == (
        '{"name":"Ada","age":36}'
    )
    assert llm.seen[0][-1]["content"].startswith("Ada Lovelace")
    answer = prompt_once(
        llm, '{"who": "Ada"}', program="test_prompting:Person", template="Who is {who}?"
    )
    assert json.loads(answer)["name"] == "Ada" and llm.seen[1][-1]["content"].startswith("Who")
    with pytest.raises(UserError, match="drop --template"):
        load_program("album", template="{x}")


@pytest.mark.slow
def test_the_cli_answers_under_a_grammar_with_the_bundled_model(tmp_path):
    import subprocess
    import sys

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA | {"additionalProperties": False}))
    done = subprocess.run(
        [sys.executable, "-m", "structune.cli", "prompt", "Give a number as JSON.",
         "--schema", str(schema), "--constrained", "--max-tokens", "16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout)["n"], int)
