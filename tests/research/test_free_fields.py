"""Free-field sampling: the cursor finds the field a JSON prefix ends in, the processor
leaves only there the scores for sampling, and a model that never opens the field decodes
its greedy answer at any temperature."""

import json

import pytest
import torch

from research.free_fields import GreedyOutside, JsonCursor, free_field_sampling
from structune.llms.local import LocalLLM
from structune.llms.sampling import Sampling

SONG = '{"name": "Heat", "songs": [{"title": "A", "length_seconds": '


@pytest.mark.parametrize(
    ("prefix", "field"),
    [
        ("", None),
        ('{"na', None),  # a key is being written: no value is due yet
        ('{"name"', None),
        ('{"name": ', "name"),
        ('{"name": "Hea', "name"),
        ('{"name": "Heat", ', None),
        ('{"name": "Heat", "songs": [', None),  # inside a list: no key owns the next item
        (SONG, "length_seconds"),
        (SONG + "27", "length_seconds"),
        (SONG + "277}", None),
        (SONG + '277}, {"tit', None),
        (SONG + '277}, {"title": "B', "title"),
        ('{"name": "a \\" : {b", "x', None),  # quotes, colons and braces inside a string
        ('{"name": "a \\" } ', "name"),
        ('{"a:b": ', "a:b"),
    ],
)
def test_the_cursor_names_the_field_whose_value_a_prefix_ends_in(prefix, field):
    cursor = JsonCursor()
    for char in prefix:  # fed a character at a time, as any cut into tokens would be
        cursor.feed(char)
    assert cursor.field == field


def test_outside_the_free_fields_only_the_argmax_is_left(tokenizer):
    prompt = tokenizer("Album:")["input_ids"]
    rows = [tokenizer(text)["input_ids"] for text in ('{"length_seconds": ', '{"name": ')]
    width = max(map(len, rows))
    rows = [[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows]  # left-padded
    processor = GreedyOutside(tokenizer, ["length_seconds"], len(prompt), rows=2)
    scores = torch.randn(2, len(tokenizer), generator=torch.Generator().manual_seed(0))
    for step in range(width + 1):  # generate's calls: the prompt, then a token more each
        ids = torch.tensor([prompt + row[:step] for row in rows])
        out = processor(ids, scores.clone())
    assert torch.equal(out[0], scores[0])  # in length_seconds: every token still possible
    kept = torch.isfinite(out[1]).nonzero().flatten().tolist()
    assert kept == [int(scores[1].argmax())]  # in name: the likeliest token alone


def test_a_field_never_opened_decodes_the_greedy_answer_at_any_temperature(tiny_model_dir):
    tiny = LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=2)
    conversations = [[{"role": "user", "content": f"Album for movie {i}"}] for i in range(3)]
    greedy = [c.text for c in tiny.complete_many(conversations, max_tokens=16)]
    hot = Sampling(temperature=2.0, seed=0)
    sampled = [c.text for c in tiny.complete_many(conversations, max_tokens=16, sampling=hot)]
    free = free_field_sampling(tiny, ["length_seconds"])
    answers = free.complete_many(conversations, max_tokens=16, sampling=hot)
    assert [c.text for c in answers] == greedy
    assert sampled != greedy  # the temperature is hot enough to change a free answer
    assert free.model.sampled_steps == 0


def test_under_a_schema_the_free_field_is_sampled_and_the_answer_still_valid(tiny_model_dir):
    tiny = LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=2)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "length_seconds": {"type": "integer"}},
        "required": ["name", "length_seconds"],
        "additionalProperties": False,
    }
    free = free_field_sampling(tiny, ["length_seconds"])
    conversations = [[{"role": "user", "content": f"Song {i}"}] for i in range(2)]
    hot = Sampling(temperature=1.0, seed=0)
    answers = free.complete_many(conversations, max_tokens=48, sampling=hot, json_schema=schema)
    assert free.model.sampled_steps > 0  # the grammar led every row into length_seconds
    for answer in answers:
        assert isinstance(json.loads(answer.text)["length_seconds"], int)
