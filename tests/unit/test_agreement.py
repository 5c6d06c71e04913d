"""Field-level agreement: leaf paths, exact scalars, tolerant numbers, lists as multisets."""

from __future__ import annotations

import pytest

from structune.evaluate.agreement import Agreement, Counts, agreement, combined, leaf_values
from structune.tasks.albums import Album


def album(name: str, artist: str, *songs: tuple[str, int]) -> dict:
    data = {
        "name": name,
        "artist": artist,
        "songs": [{"title": t, "length_seconds": s} for t, s in songs],
    }
    return Album.model_validate(data).model_dump(mode="json")


def test_leaves_are_flattened_to_paths_and_list_items_share_one():
    data = {
        "name": "X",
        "meta": {"year": 2020, "label": None},
        "songs": [{"title": "a", "tags": ["x", "y"]}, {"title": "b", "tags": []}],
        "grid": [[1, 2], [3]],
    }
    assert leaf_values(data) == {
        "name": ["X"],
        "meta.year": [2020],
        "meta.label": [None],
        "songs[].title": ["a", "b"],
        "songs[].tags[]": ["x", "y"],
        "grid[][]": [1, 2, 3],
    }


def test_scalars_match_exactly_after_whitespace_is_normalised():
    found = agreement(
        {"a": "The  Band\n", "b": "x", "c": "Case"}, {"a": " The Band", "b": "y", "c": "case"}
    )
    assert found.paths == {
        "a": Counts(tp=1),
        "b": Counts(fp=1, fn=1),
        "c": Counts(fp=1, fn=1),  # case counts
    }
    assert found.total == Counts(tp=1, fp=2, fn=2)
    assert found.total.precision == pytest.approx(1 / 3)
    assert found.total.recall == pytest.approx(1 / 3)


def test_numbers_agree_within_a_relative_tolerance():
    assert agreement({"x": 1.0000001}, {"x": 1.0}).total == Counts(tp=1)  # 1e-7 < 1e-6
    assert agreement({"x": 1.001}, {"x": 1.0}).total == Counts(fp=1, fn=1)
    assert agreement({"x": 1.001}, {"x": 1.0}, rel_tol=0.01).total == Counts(tp=1)
    assert agreement({"x": 3}, {"x": 3.0}).total == Counts(tp=1)  # int and float alike


def test_booleans_and_nulls_are_not_numbers_or_strings():
    found = agreement({"a": True, "b": None, "c": None}, {"a": 1, "b": None, "c": ""})
    assert found.paths == {"a": Counts(fp=1, fn=1), "b": Counts(tp=1), "c": Counts(fp=1, fn=1)}


def test_lists_match_as_multisets_in_any_order():
    found = agreement({"tags": ["b", "a", "b"]}, {"tags": ["c", "b", "a"]})
    # a and one b match; the second b is extra; c is missed
    assert found.paths == {"tags[]": Counts(tp=2, fp=1, fn=1)}
    assert found.total.precision == pytest.approx(2 / 3)
    assert found.total.recall == pytest.approx(2 / 3)
    assert agreement({"n": [3, 1, 2]}, {"n": [1.0, 2.0, 3.0]}).total == Counts(tp=3)


def test_lists_of_objects_earn_each_leaf_path():
    reference = album("N", "A", ("one", 100), ("two", 200), ("three", 300))
    answer = album("N", "B", ("two", 200), ("one", 101))
    found = agreement(answer, reference)
    assert found.paths == {
        "name": Counts(tp=1),
        "artist": Counts(fp=1, fn=1),
        "songs[].title": Counts(tp=2, fn=1),  # one, two found; three missed
        "songs[].length_seconds": Counts(tp=1, fp=1, fn=2),  # 200 found; 101 is not 100
    }
    # tp 4, fp 2, fn 4: precision 4/6, recall 4/8, F1 = 2·(2/3)(1/2)/(2/3 + 1/2) = 4/7
    assert found.total == Counts(tp=4, fp=2, fn=4)
    assert found.total.f1 == pytest.approx(4 / 7)


def test_a_missing_answer_misses_every_reference_leaf():
    found = agreement(None, album("N", "A", ("one", 100)))
    assert found.total == Counts(fn=4)
    assert (found.total.precision, found.total.recall, found.total.f1) == (0.0, 0.0, 0.0)


def test_empty_sides_agree_fully_and_invented_leaves_score_zero():
    assert agreement({"tags": []}, {"tags": []}).total.f1 == 1.0
    invented = agreement({"tags": ["x"]}, {"tags": []}).total
    assert invented == Counts(fp=1)
    assert (invented.precision, invented.recall) == (0.0, 0.0)


def test_answers_combine_by_micro_averaging():
    perfect = agreement({"a": "x"}, {"a": "x"})  # F1 1
    poor = agreement({"t": ["p"]}, {"t": ["q", "r", "s"]})  # tp 0, fp 1, fn 3: F1 0
    total = combined([perfect, poor])
    assert total.paths == {"a": Counts(tp=1), "t[]": Counts(fp=1, fn=3)}
    # tp 1, fp 1, fn 3: precision 1/2, recall 1/4, F1 1/3 (a macro-average would say 1/2)
    assert total.total.f1 == pytest.approx(1 / 3)
    assert combined([]) == Agreement()
    assert total.to_dict()["paths"]["t[]"]["fn"] == 3
