"""Content hashes that are persisted keep their values: datasets deduplicate by example
ids, stored rows carry schema hashes, checkpoint folders are named by run keys. The
values below were computed before the hashes shared one helper."""

from structune.hashing import content_hash
from structune.program import schema_hash
from structune.record.store import example_id
from structune.tasks.albums import album_program
from structune.train.data import dataset_hash


def test_example_ids_keep_their_values():
    assert example_id("album", {"movie_name": "Goodfellas"}, "curated:albums-v1") == (
        "3ead03925c4665b19ceacf82"
    )
    assert example_id("album", {"movie_name": "Amélie"}, "offline:albums") == (
        "4666f85c469d2c80ea183be3"
    )
    assert example_id("citations", {"query_str": "q", "context_str": "c"}, "rules:citations") == (
        "f1ccb89c0dada75713d391a2"
    )


def test_schema_hashes_keep_their_values():
    assert album_program.schema_hash == "5cd647425c6ba90c"
    schema = {
        "title": "Café",
        "type": "object",
        "properties": {"b": {"type": "string"}, "a": {"type": "integer"}},
    }
    assert schema_hash(schema) == "a87ba507b0c38cd0"


def test_dataset_hashes_keep_their_values():
    conversation = [
        {"role": "user", "content": "Amélie"},
        {"role": "assistant", "content": '{"name":"x"}'},
    ]
    assert dataset_hash([conversation]) == "5aec0234dfd6d82e"


def test_run_keys_of_ascii_settings_keep_their_values():
    identity = {
        "base": "smollm2-135m",
        "parent": None,
        "dataset": "0123456789abcdef",
        "config": {"lora_r": 16, "seed": 0},
    }
    assert content_hash(identity, length=16) == "31e331dd2c186130"


def test_key_order_does_not_matter_and_content_does():
    assert content_hash({"a": 1, "b": [2]}, length=16) == content_hash(
        {"b": [2], "a": 1}, length=16
    )
    assert content_hash({"a": 1}, length=16) != content_hash({"a": 2}, length=16)
    assert len(content_hash({"a": 1}, length=24)) == 24
