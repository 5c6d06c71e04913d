import json

import pydantic
import pytest

from structune import CallableLLM, InvalidOutput, Program, UserError
from structune.program import canonical_json, extract_json_object
from structune.tasks.albums import Album, album_program

GOOD = {
    "name": "Neon Nights",
    "artist": "The Drivers",
    "songs": [{"title": "A", "length_seconds": 200}],
}


def test_messages_carry_the_rendered_template_and_the_schema():
    messages = album_program.messages({"movie_name": "Goodfellas"})
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[-1]["content"]
    assert "Using the movie Goodfellas as inspiration." in user
    schema_text = user.split("Here's a JSON schema to follow:\n")[1].split("\n\n")[0]
    assert json.loads(schema_text) == Album.model_json_schema()


def test_missing_template_variable_is_named():
    with pytest.raises(UserError, match="movie_name"):
        album_program.messages({"film": "Heat"})


def test_output_cls_must_be_a_pydantic_model():
    with pytest.raises(UserError, match="Pydantic model"):
        Program("Say {x}", dict)  # type: ignore[type-var]


def test_template_with_bad_field_is_refused():
    with pytest.raises(UserError, match="plain names"):
        Program("Say {x.y}", Album)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        "Sure! Here is the album:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nEnjoy.",
        "The answer is " + json.dumps(GOOD) + " — hope that helps {not json}",
        "```\n" + json.dumps(GOOD) + "\n```",
    ],
)
def test_parse_tolerates_fences_and_surrounding_text(text):
    assert album_program.parse(text) == Album.model_validate(GOOD)


def test_invalid_answer_keeps_raw_text_and_reason():
    text = 'def album():\n    return {"name": "x"}'
    with pytest.raises(InvalidOutput) as info:
        album_program.parse(text)
    assert info.value.text == text
    assert "artist" in info.value.reason and "Field required" in info.value.reason


def test_no_json_at_all():
    with pytest.raises(InvalidOutput, match="no JSON object"):
        extract_json_object("I cannot help with that.")


def test_retries_show_the_model_its_error():
    seen = []

    def flaky(messages):
        seen.append(messages)
        return "not json" if len(seen) == 1 else json.dumps(GOOD)

    album = album_program.run(CallableLLM(flaky), {"movie_name": "Heat"}, max_retries=2)
    assert album.name == "Neon Nights"
    assert len(seen) == 2
    assert seen[1][-2] == {"role": "assistant", "content": "not json"}
    assert "not valid" in seen[1][-1]["content"]


def test_retries_are_bounded():
    calls = []
    llm = CallableLLM(lambda m: calls.append(m) or "nope")
    with pytest.raises(InvalidOutput):
        album_program.run(llm, {"movie_name": "Heat"}, max_retries=2)
    assert len(calls) == 3


def test_canonical_json_matches_pydantic_and_keeps_unicode():
    class Author(pydantic.BaseModel):
        name: str
        year: int

    author = Author(name="Rocktäschel", year=2020)
    assert canonical_json(author.model_dump(mode="json")) == author.model_dump_json()
    assert "\\u" not in canonical_json({"name": "Rocktäschel"})


def test_schema_hash_ignores_key_order():
    from structune.program import schema_hash

    assert schema_hash({"a": 1, "b": 2}) == schema_hash({"b": 2, "a": 1})
    assert schema_hash({"a": 1}) != schema_hash({"a": 2})
