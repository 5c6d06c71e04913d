"""Content of valid answers: repeated list items, constant, echoed and copied values, valid
but wrong; and the columns they add to compare's table, its JSON and the eval report."""

from __future__ import annotations

import json
from typing import Any

import pytest

from structune.constrain.distinct import same_item_key
from structune.evaluate.agreement import agreement
from structune.evaluate.compare import Comparison, compare
from structune.evaluate.content import ContentScores, TopValue, content_scores
from structune.evaluate.report import evaluate
from structune.llms.callable import CallableLLM
from structune.tasks.albums import album_program, curated_albums, curated_teacher


def album(name: str, artist: str, *songs: tuple[str, int]) -> dict[str, Any]:
    return {
        "name": name,
        "artist": artist,
        "songs": [{"title": t, "length_seconds": s} for t, s in songs],
    }


def test_five_identical_songs_are_one_distinct_item_in_five():
    scores = content_scores(
        [album("Loop", "The Loops", *[("The City", 200 + i) for i in range(5)])]
    )
    # a song is its title: different lengths do not make the same title a new song
    assert (scores.with_lists, scores.all_distinct, scores.repeated_exact) == (1, 0, 4)
    assert scores.distinct_ratio == pytest.approx(0.2)


def test_near_duplicates_repeat_and_numbered_items_do_not():
    assert same_item_key("  the  City!") == same_item_key("The City") == "the city"
    songs = [
        ("The City", 1),
        ("the city!", 2),  # the same title once case and punctuation are set aside
        ("Lights of the Harbour", 3),
        ("Lights of the Harbours", 4),  # near: difflib ratio 0.98
        ("Track 1", 5),
        ("Track 2", 6),  # similar, but another number: another item
    ]
    scores = content_scores([album("A", "B", *songs), album("C", "D", ("x", 1), ("y", 2))])
    assert (scores.repeated_exact, scores.repeated_near) == (1, 1)
    assert (scores.with_lists, scores.all_distinct) == (2, 1)
    assert scores.distinct_ratio == pytest.approx((4 / 6 + 1) / 2)


def test_lists_of_strings_are_checked_and_lists_of_numbers_are_not():
    scores = content_scores([{"tags": ["Rock", "rock", "pop"], "scores": [1, 1, 1]}])
    assert (scores.with_lists, scores.repeated_exact) == (1, 1)
    assert scores.distinct_ratio == pytest.approx(2 / 3)
    assert content_scores([{"scores": [1, 1]}]).distinct_ratio is None


def test_a_constant_album_name_over_three_inputs_and_an_echoed_title():
    answers = [
        album("Echoes", "A", ("Echoes", 200), ("Two", 210)),  # the name is a song too
        album("echoes", "B", ("Three", 220), ("Four", 230)),
        album("Echoes!", "C", ("Five", 240), ("Six", 250)),
    ]
    scores = content_scores(answers)
    assert scores.top_values["name"] == TopValue("Echoes", 3, 3)
    assert scores.constant == ("name", TopValue("Echoes", 3, 3))
    assert scores.top_values["artist"].share == pytest.approx(1 / 3)
    assert scores.echoed == 1 and scores.echoed_rate == pytest.approx(1 / 3)
    # one answer is no evidence of a constant: a path needs two answers
    assert content_scores(answers[:1]).constant is None


def test_values_copied_from_the_training_answers_and_the_most_common_length():
    training = [album("Old", "Trainer", ("Night Drive", 277), ("Dawn", 223))]
    answers = [
        album("New One", "Someone", ("Night Drive", 277), ("Fresh", 277)),
        album("New Two", "Trainer", ("Other", 277), ("Dawn", 190)),
        None,  # an invalid answer: not judged
    ]
    scores = content_scores(answers, training_answers=training)
    assert scores.answers == 2
    # 8 strings; "Night Drive", "Trainer" and "Dawn" are in the training answers
    assert (scores.copied, scores.strings) == (3, 8)
    assert scores.copied_rate == pytest.approx(3 / 8)
    length = scores.top_values["songs[].length_seconds"]
    assert (length.value, length.count, length.total, length.in_training) == (277, 3, 4, True)
    assert content_scores(answers).copied is None and content_scores(answers).copied_rate is None


def test_valid_but_wrong_counts_valid_answers_that_disagree_with_their_reference():
    reference = album("R", "S", ("t", 1))
    answers = [reference, album("R", "S", ("u", 1)), None, album("X", "Y")]
    agreements = [agreement(answers[0], reference), agreement(answers[1], reference), None, None]
    scores = content_scores(answers, agreements=agreements)
    # the invalid answer and the one without a reference are not judged
    assert (scores.wrong, scores.judged) == (1, 2) and scores.wrong_rate == 0.5
    assert content_scores(answers).wrong is None


def test_scores_read_back_from_their_dict():
    training = [album("Old", "Trainer", ("Night Drive", 277))]
    scores = content_scores(
        [album("Old", "A", ("Night Drive", 277)), album("Old", "B", ("x", 1), ("x", 2))],
        training_answers=training,
    )
    assert ContentScores.from_dict(json.loads(json.dumps(scores.to_dict()))) == scores


def scripted(*texts: dict[str, Any]) -> CallableLLM:
    answers = iter(texts)
    return CallableLLM(lambda messages: json.dumps(next(answers)), model_id="scripted")


def test_compare_shows_the_content_columns_in_its_table_and_json(tmp_path):
    chosen = curated_albums()[:3]
    inputs = [{"movie_name": a["movie_name"]} for a in chosen]
    junk = album("The City", "The City", *[("The City", 277)] * 5)
    models = {
        "teacher": curated_teacher(),
        "junk": scripted(junk, junk, {"name": "no artist"}),
    }
    gold = [a["album"] for a in chosen]
    training = [a["album"] for a in curated_albums()]
    found = compare(album_program, models, inputs, gold=gold, training_answers=training)
    header, _, teacher, junk_row = found.table().splitlines()
    columns = ["wrong|valid", "all-distinct", "distinct", "const", "echo", "copied"]
    assert header.split()[4:10] == columns
    # the teacher is the gold and the training set; its three albums are all different
    teacher_cells = teacher.split()[4:10]
    assert teacher_cells[:3] + teacher_cells[4:] == ["0/3", "3/3", "1.00", "0/3", "1.00"]
    assert float(teacher_cells[3]) < 0.5  # no value fills most of a field
    # junk: two valid answers of five equal songs, named and sung by "The City", all wrong
    junk_cells = ["3/3", "2/3", "0", "2/2", "0/2", "0.20", "1.00", "2/2", "0.00"]
    assert junk_row.split()[1:10] == junk_cells
    data = json.loads(json.dumps(found.to_dict()))
    content = {s["model"]: s["content"] for s in data["scores"]}
    assert content["junk"]["distinct_ratio"] == pytest.approx(0.2)
    assert content["junk"]["constant"] == {"path": "artist", "share": 1.0}
    assert content["junk"]["top_values"]["songs[].length_seconds"]["value"] == 277
    assert content["teacher"]["copied_rate"] == 1.0 and content["teacher"]["wrong"] == 0
    path = tmp_path / "comparison.json"
    found.write_json(path)
    assert Comparison.from_dict(json.loads(path.read_text())).table() == found.table()


def test_compare_without_training_answers_or_gold_leaves_their_columns_out():
    found = compare(album_program, {"junk": scripted(album("A", "B"))}, [{"movie_name": "Heat"}])
    header = found.table().splitlines()[0]
    assert "distinct" in header and "const" in header and "echo" in header
    assert "copied" not in header and "wrong|valid" not in header
    # an album without songs has no list to judge; one answer is no constant
    assert found.table().splitlines()[2].split()[4:8] == ["-", "-", "-", "0/1"]


def test_eval_counts_valid_but_wrong_against_a_teacher(tmp_path):
    chosen = curated_albums()[:2]
    inputs = [{"movie_name": a["movie_name"]} for a in chosen]
    wrong = {**chosen[1]["album"], "artist": "Somebody Else"}
    models = {"teacher": curated_teacher(), "student": scripted(chosen[0]["album"], wrong)}
    report = evaluate(album_program, models, inputs, reference="teacher")
    lines = report.table().splitlines()
    assert "wrong|valid" in lines[1]
    student = next(line for line in lines if line.startswith("student"))
    assert student.split()[7] == "1/2"  # after parsed, valid, truncated and P / R / F1
    data = json.loads(report.to_json())
    scores = {s["model"]: s for s in data["scores"]}
    assert scores["student"]["content"]["wrong_rate"] == 0.5
    assert scores["teacher"]["content"]["wrong"] is None  # the reference judges itself not
    page = tmp_path / "report.html"
    report.write_html(page)
    text = page.read_text()
    assert "Content of the valid answers" in text and "valid but wrong" in text
    assert "Most common value per field" in text and "songs[].title" in text


def test_a_number_too_large_for_a_float_is_counted_not_overflowed():
    huge = 10**400  # a grammar-held base model writes such lengths
    answers = [album("A", "B", ("x", huge)), album("C", "D", ("y", huge), ("z", 277))]
    length = content_scores(answers).top_values["songs[].length_seconds"]
    assert (length.value, length.count, length.total) == (huge, 2, 3)
    counts = agreement(answers[0], album("A", "B", ("x", huge + 1))).paths
    assert (counts["songs[].length_seconds"].tp, counts["songs[].title"].tp) == (0, 1)
    assert agreement(answers[0], answers[0]).total.fn == 0
