"""Distinct list items held while decoding (`structune.constrain.distinct`).

Schema side: which lists are held, and what is refused. Decoding side: the tiny random
model, which repeats freely when nothing stops it, under plain and extractive grammars,
greedy and sampled: no answer repeats an item, and the full schema's check agrees.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pydantic
import pytest

from structune import Program, UserError
from structune.constrain.distinct import (
    DISTINCT_KEY,
    Distinct,
    DistinctList,
    DistinctTracker,
    hold_distinct,
    near_duplicate,
    same_item_key,
)
from structune.constrain.extractive import Extracted
from structune.llms.local import LocalLLM
from structune.llms.sampling import GREEDY, Sampling


class Song(pydantic.BaseModel):
    title: str = pydantic.Field(max_length=3)
    length_seconds: int = pydantic.Field(ge=0, le=9)


class Album(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=3)
    songs: Annotated[list[Song], Distinct(by="title")] = pydantic.Field(min_length=4, max_length=4)
    tags: Annotated[list[Literal["x", "y", "z"]], Distinct()] = pydantic.Field(
        min_length=3, max_length=3
    )


# --- the schema side ------------------------------------------------------------------------


def test_lists_are_found_through_properties_items_refs_and_optional_fields():
    album = Album.model_json_schema()
    schema = {
        "type": "object",
        "properties": {
            "album": {"$ref": "#/$defs/Album"},
            "maybe": {"anyOf": [{"$ref": "#/$defs/Names"}, {"type": "null"}]},
            "numbers": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        },
        "$defs": {
            **album.pop("$defs"),
            "Album": album,
            "Names": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
    }
    held, lists = hold_distinct(schema)
    assert set(lists) == {
        DistinctList(("album", "songs"), by="title", max_length=3, near=True),
        DistinctList(("album", "tags"), values=("x", "y", "z"), near=True),
        DistinctList(("maybe",)),  # uniqueItems: equal items only
    }
    text = json.dumps(held)
    assert DISTINCT_KEY not in text
    # Numbers are not held here: their uniqueItems stays for the relax-and-check path.
    assert held["properties"]["numbers"]["uniqueItems"] is True
    assert "uniqueItems" not in held["$defs"]["Names"]


def test_a_definition_used_twice_is_held_at_both_places():
    tags = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Tags"}, "b": {"$ref": "#/$defs/Tags"}},
        "$defs": {"Tags": tags},
    }
    _, lists = hold_distinct(schema)
    assert set(lists) == {DistinctList(("a",)), DistinctList(("b",))}


def test_a_recursive_schema_is_followed_once_round_each_cycle():
    node = {
        "type": "object",
        "properties": {
            "names": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "left": {"$ref": "#/$defs/Node"},
            "right": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
        },
    }
    _, lists = hold_distinct({"$ref": "#/$defs/Node", "$defs": {"Node": node}})
    assert lists == (DistinctList(("names",)),)  # the root's own; deeper ones are checked


def test_a_marker_the_decoder_cannot_follow_is_refused_by_name():
    item = {"type": "object", "properties": {"title": {"type": "string"}}}
    hidden = {"oneOf": [{"type": "array", "items": item, DISTINCT_KEY: "title"}, {"type": "null"}]}
    with pytest.raises(UserError, match="cannot follow it"):
        hold_distinct(hidden)
    with pytest.raises(UserError, match="names no string field"):
        hold_distinct({"type": "array", "items": item, DISTINCT_KEY: "length"})


def test_pydantic_refuses_a_repeat_as_the_decoder_counts_one():
    songs = [{"title": t, "length_seconds": 1} for t in ["One", "Two", "Six", "ONE"]]
    with pytest.raises(pydantic.ValidationError, match="repeats the title 'ONE'"):
        Album(name="a", songs=songs, tags=["x", "y", "z"])
    with pytest.raises(pydantic.ValidationError, match="repeats the item 'x'"):
        Album(name="a", songs=[*songs[:3], {"title": "Ten", "length_seconds": 1}], tags=["x"] * 3)
    assert same_item_key("The  City!") == same_item_key("the city") == "the city"


def test_the_tracker_bans_the_tokens_that_would_close_on_a_repeat():
    texts = [bytes([i]) for i in range(128)] + [b'"a"', b'a"', b'",', b'\\"']
    tracker = DistinctTracker([DistinctList(("v",))], texts)
    for char in '{"v":["a","b",':
        tracker.add(ord(char))
    whole, closing, closing_comma, escaped_quote = range(128, 132)
    candidates = [ord('"'), whole, closing, closing_comma, escaped_quote]
    assert tracker.repeats(candidates) == [whole]  # `"a"` opens and closes on a repeat
    tracker.add(ord('"'))
    assert tracker.repeats(candidates) == [closing]  # `a"` would write "a" again
    tracker.add(ord("a"))
    assert tracker.repeats(candidates) == [ord('"'), whole, closing_comma]  # each ends "a"
    assert tracker.repeats([closing]) == []  # "aa" would not


def test_a_marker_refuses_near_items_and_uniqueitems_only_equal_ones():
    class Tracks(pydantic.BaseModel):
        near: Annotated[list[str], Distinct()]
        exact: Annotated[list[str], Distinct(near=False)]

    with pytest.raises(pydantic.ValidationError, match="repeats the item 'Songs of the Wind'"):
        Tracks(near=["Song of the Wind", "Songs of the Wind"], exact=[])
    Tracks(near=["Track 1", "Track 2"], exact=["Song of the Wind", "Songs of the Wind"])
    schema, lists = hold_distinct(Tracks.model_json_schema())
    assert [(held.path, held.near) for held in lists] == [(("near",), True), (("exact",), False)]
    assert "x-structune-distinct-near" not in json.dumps(schema)
    assert near_duplicate("song of the wind", "songs of the wind")
    assert not near_duplicate("track 1", "track 2")  # numbers keep items apart
    assert not near_duplicate("song for you", "song for me")


@pytest.mark.parametrize("near", [True, False])
def test_the_tracker_bans_a_close_near_a_held_item_when_asked(near):
    texts = [bytes([i]) for i in range(128)]
    tracker = DistinctTracker([DistinctList(("v",), near=near)], texts)
    for char in '{"v":["Song of the Wind","Songs of the Wind':
        tracker.add(ord(char))
    assert tracker.repeats([ord('"')]) == ([ord('"')] if near else [])
    for char in " 2":
        tracker.add(ord(char))
    assert tracker.repeats([ord('"')]) == []  # "Songs of the Wind 2": another number


# --- decoding --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=4)


def repeats(items: list[str]) -> bool:
    keys = [same_item_key(i) for i in items]
    return len(set(keys)) < len(keys)


def test_without_the_constraint_the_tiny_model_repeats(tiny_llm):
    # The control: the same schema with the lists' distinctness left out.
    schema = Album.model_json_schema()
    for keyword in ("uniqueItems", "x-structune-distinct-near"):
        schema["properties"]["tags"].pop(keyword)
    prompts = [[{"role": "user", "content": f"Album {i}"}] for i in range(4)]
    answers = tiny_llm.complete_many(prompts, max_tokens=200, json_schema=schema)
    parsed = [json.loads(a.text) for a in answers if a.finish_reason == "stop"]
    assert any(repeats(p["tags"]) for p in parsed), parsed


@pytest.mark.parametrize("sampling", [GREEDY, Sampling(temperature=1.0)])
def test_no_answer_repeats_an_item_greedy_or_sampled(tiny_llm, sampling):
    program = Program("Album {n}", Album)
    prompts = [program.messages({"n": i}) for i in range(4)]
    answers = tiny_llm.complete_many(
        prompts, max_tokens=200, sampling=sampling, json_schema=program.json_schema
    )
    for answer in answers:
        check = answer.schema_check
        assert check is not None and check.resamples == 0 and check.violation is None, check
        assert {"uniqueItems", DISTINCT_KEY} <= set(check.coverage.enforced)
        if answer.finish_reason == "stop":
            album = program.parse_completion(answer)  # Pydantic's own check agrees
            assert sorted(album.tags) == ["x", "y", "z"]
            assert not repeats([s.title for s in album.songs]), answer.text


class Names(pydantic.BaseModel):
    names: Annotated[list[Annotated[str, Extracted()]], Distinct()] = pydantic.Field(
        min_length=3, max_length=3
    )


def test_extracted_items_are_held_distinct_too(tiny_llm):
    program = Program("Names in: {input}", Names)
    source = "Ann met Bob. Ann met Cy. Ann met Bob again."
    answer = program.run(tiny_llm, {"input": source}, max_tokens=60, constrained=True)
    assert not repeats(answer.names), answer
    assert all(name in source for name in answer.names)


def test_the_budget_closes_a_string_only_where_it_repeats_no_item(tiny_llm):
    # Closing as the budget runs out takes the ban into account: after "ab" and a second
    # string "ab" so far, a quote would write "ab" twice, so the row writes on instead.
    from budget_closing import allowed_when_closing

    strings = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    schema = {"type": "object", "properties": {"names": strings}, "required": ["names"]}
    allowed = allowed_when_closing(schema, tiny_llm.tokenizer, '{"names":["ab","ab')
    assert allowed and not any(text.startswith('"') for text in allowed), allowed
