import json
import sqlite3
from dataclasses import replace

import pytest

from structune import (
    LLM,
    BackendError,
    CallableLLM,
    Completion,
    DatasetStore,
    UserError,
    export_jsonl,
    import_jsonl,
)
from structune.record import record
from structune.tasks.albums import album_program, curated_albums, curated_teacher


def album_answer(messages):
    movie = messages[-1]["content"].split("Using the movie ")[1].split(" as inspiration")[0]
    return json.dumps({"name": f"{movie} Suite", "artist": "Band", "songs": []})


MOVIES = [{"movie_name": m} for m in ["Heat", "Alien", "Jaws", "Rocky", "Up"]]


@pytest.fixture
def store(tmp_path):
    with DatasetStore(tmp_path / "data.sqlite") as s:
        yield s


def test_recording_stores_every_field_and_is_idempotent(store):
    teacher = CallableLLM(album_answer, model_id="fake")
    first = record(album_program, teacher, MOVIES, store=store, batch_size=2, progress=False)
    assert (first.recorded, first.skipped, first.valid) == (5, 0, 5)
    again = record(album_program, teacher, MOVIES, store=store, progress=False)
    assert (again.recorded, again.skipped) == (0, 5)
    examples = store.examples("album")
    assert len(examples) == 5
    e = examples[0]
    assert e.inputs == {"movie_name": "Heat"}
    assert e.parsed == {"name": "Heat Suite", "artist": "Band", "songs": []}
    assert e.teacher == "fake" and e.schema_hash == album_program.schema_hash
    assert e.messages == album_program.messages({"movie_name": "Heat"})
    assert store.schema(e.schema_hash) == album_program.json_schema
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_different_teacher_is_a_different_example(store):
    record(
        album_program, CallableLLM(album_answer, model_id="a"), MOVIES, store=store, progress=False
    )
    s = record(
        album_program, CallableLLM(album_answer, model_id="b"), MOVIES, store=store, progress=False
    )
    assert s.recorded == 5


def test_invalid_answers_are_kept_flagged_and_not_trained_on(store):
    def sometimes_code(messages):
        return "def album(): pass" if "Jaws" in messages[-1]["content"] else album_answer(messages)

    s = record(album_program, CallableLLM(sometimes_code), MOVIES, store=store, progress=False)
    assert (s.valid, s.invalid) == (4, 1)
    (bad,) = store.examples("album", valid=False)
    assert bad.completion == "def album(): pass" and "no JSON object" in bad.error
    from structune.train.sources import conversations_from_store

    assert len(conversations_from_store(store, "album")) == 4


def test_a_crash_mid_run_loses_nothing_and_resume_finishes(store):
    def interrupted_on_rocky(messages):
        if "Rocky" in messages[-1]["content"]:
            raise KeyboardInterrupt  # Ctrl-C, or a kill: not a teacher's failure
        return album_answer(messages)

    teacher = CallableLLM(interrupted_on_rocky, model_id="t")
    with pytest.raises(KeyboardInterrupt):
        record(album_program, teacher, MOVIES, store=store, batch_size=1, progress=False)
    assert len(store.examples()) == 3  # Heat, Alien, Jaws were committed

    s = record(
        album_program, CallableLLM(album_answer, model_id="t"), MOVIES, store=store, progress=False
    )
    assert (s.recorded, s.skipped) == (2, 3)
    assert len(store.examples()) == 5


def test_any_exception_of_a_teacher_is_a_failed_row_asked_again_without_stopping(store):
    def breaks_on_rocky(messages):
        if "Rocky" in messages[-1]["content"]:
            raise RuntimeError("the function has a bug")
        return album_answer(messages)

    teacher = CallableLLM(breaks_on_rocky, model_id="t")
    first = record(album_program, teacher, MOVIES, store=store, batch_size=1, progress=False)
    assert (first.valid, first.failed) == (4, 1)
    assert first.first_failure == "RuntimeError: the function has a bug"
    (failed,) = [e for e in store.examples() if e.failed]
    assert failed.inputs == {"movie_name": "Rocky"} and "RuntimeError" in failed.error

    # The next run asks only Rocky again; that it fails again is reported, not fatal.
    again = record(album_program, teacher, MOVIES, store=store, batch_size=1, progress=False)
    assert (again.recorded, again.skipped, again.failed) == (0, 4, 1)
    assert len(store.examples()) == 5

    fixed = record(
        album_program, CallableLLM(album_answer, model_id="t"), MOVIES, store=store, progress=False
    )
    assert (fixed.valid, fixed.failed, fixed.skipped) == (1, 0, 4)
    assert not any(e.failed for e in store.examples())


class BatchingTeacher(LLM):
    """Answers a whole batch in one call, as local models do; an input mentioning Jaws
    makes the call fail, the way one bad request fails a batched server call."""

    model_id = "batching"

    def __init__(self):
        self.batches = []
        self.singles = []

    def complete(self, messages, **options):
        self.singles.append(messages[-1]["content"])
        if "Jaws" in messages[-1]["content"]:
            raise BackendError("the server answered HTTP 400: prompt rejected")
        return Completion(album_answer(messages))

    def complete_many(self, conversations, **options):
        self.batches.append(len(conversations))
        if any("Jaws" in c[-1]["content"] for c in conversations):
            raise BackendError("the server answered HTTP 400: prompt rejected")
        return [Completion(album_answer(c)) for c in conversations]


def test_a_failed_batch_is_asked_one_input_at_a_time_and_failures_are_kept(store):
    teacher = BatchingTeacher()
    s = record(album_program, teacher, MOVIES, store=store, batch_size=2, progress=False)
    assert (s.recorded, s.valid, s.invalid, s.failed) == (4, 4, 0, 1)
    assert teacher.batches == [2, 2, 1]  # Heat+Alien, Jaws+Rocky, Up
    assert len(teacher.singles) == 2  # only the failed batch, one input at a time
    (jaws,) = [e for e in store.examples() if e.failed]
    assert jaws.inputs == {"movie_name": "Jaws"} and not jaws.valid
    assert jaws.error == "teacher error: the server answered HTTP 400: prompt rejected"
    assert store.examples(valid=True) == [e for e in store.examples() if not e.failed]
    (summary,) = store.summary()
    assert (summary.examples, summary.valid, summary.failed) == (4, 4, 1)


def test_failures_are_asked_again_and_replaced_but_never_replace_an_answer(store, tmp_path):
    def no_jaws(messages):
        if "Jaws" in messages[-1]["content"]:
            raise BackendError("teacher overloaded")
        return album_answer(messages)

    first = record(album_program, CallableLLM(no_jaws, model_id="t"), MOVIES, store=store)
    assert (first.recorded, first.failed) == (4, 1)
    with DatasetStore(tmp_path / "copy.sqlite") as copy:  # failures survive export → import
        export_jsonl(store, tmp_path / "all.jsonl")
        import_jsonl(tmp_path / "all.jsonl", copy)
        assert copy.examples() == store.examples()

    asked = []
    again = record(
        album_program,
        CallableLLM(lambda m: asked.append(m) or album_answer(m), model_id="t"),
        MOVIES,
        store=store,
    )
    assert (again.recorded, again.skipped, again.failed) == (1, 4, 0) and len(asked) == 1
    assert not any(e.failed for e in store.examples()) and len(store.examples()) == 5

    answer = store.examples()[0]  # a late failure from another process loses to the answer
    late = replace(answer, failed=True, valid=False, error="late")
    assert store.add_many([late]) == 0
    assert store.examples()[0] == answer


def test_a_store_from_before_failed_rows_opens_and_keeps_its_examples(tmp_path):
    from structune.record.store import _MIGRATIONS

    path = tmp_path / "v1.sqlite"
    with DatasetStore(tmp_path / "new.sqlite") as new:
        record(album_program, CallableLLM(album_answer, model_id="t"), MOVIES[:2], store=new)
    current = sqlite3.connect(tmp_path / "new.sqlite")
    current.row_factory = sqlite3.Row
    rows = [dict(r) for r in current.execute("SELECT * FROM examples")]
    current.close()
    old = sqlite3.connect(path)
    old.executescript(_MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    for row in rows:
        del row["failed"]
        old.execute(
            f"INSERT INTO examples ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )
    old.commit()
    old.close()

    with DatasetStore(path) as store:
        assert [e.failed for e in store.examples()] == [False, False]
        s = record(album_program, CallableLLM(album_answer, model_id="t"), MOVIES, store=store)
        assert (s.recorded, s.skipped) == (3, 2)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_missing_variable_fails_before_any_teacher_call(store):
    calls = []
    teacher = CallableLLM(lambda m: calls.append(m) or "{}")
    with pytest.raises(UserError, match="movie_name"):
        record(album_program, teacher, [*MOVIES, {"title": "Heat"}], store=store, progress=False)
    assert calls == []


def test_jsonl_round_trip_is_lossless(store, tmp_path):
    record(
        album_program, CallableLLM(album_answer, model_id="t"), MOVIES, store=store, progress=False
    )
    record(
        album_program,
        CallableLLM(lambda m: "oops", model_id="bad"),
        MOVIES[:1],
        store=store,
        progress=False,
    )
    first = tmp_path / "a.jsonl"
    assert export_jsonl(store, first) == 6
    line = json.loads(first.read_text().splitlines()[0])
    assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant"]

    with DatasetStore(tmp_path / "copy.sqlite") as copy:
        summary = import_jsonl(first, copy)
        assert (summary.added, summary.skipped) == (6, 0)
        assert copy.examples() == store.examples()
        second = tmp_path / "b.jsonl"
        export_jsonl(copy, second)
        assert second.read_bytes() == first.read_bytes()
        assert import_jsonl(first, copy).skipped == 6


def test_malformed_jsonl_names_file_and_line_and_imports_nothing(store, tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{}"}]}
    path.write_text(json.dumps(good) + "\n" + '{"messages": [oops\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        import_jsonl(path, store, task="t")
    assert store.examples() == []


def test_plain_openai_lines_import_with_a_task_and_validate_against_a_program(store, tmp_path):
    path = tmp_path / "plain.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": album_answer(
                        [{"role": "user", "content": "Using the movie X as inspiration"}]
                    ),
                },
            ]
        },
        {"messages": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "nope"}]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(UserError, match="task name"):
        import_jsonl(path, store)
    summary = import_jsonl(path, store, program=album_program)
    assert summary.added == 2
    assert [e.valid for e in store.examples("album")] == [True, False]
    assert store.examples()[0].teacher == "import:plain.jsonl"


def test_curated_teacher_answers_every_curated_movie_validly(store):
    movies = [{"movie_name": item["movie_name"]} for item in curated_albums()]
    s = record(album_program, curated_teacher(), movies, store=store, progress=False)
    assert s.recorded == len(movies) >= 40 and s.invalid == 0


def test_heldout_movies_are_not_in_the_training_set():
    from structune.tasks.albums import heldout_movies

    heldout = {m.lower() for m in heldout_movies()}
    assert len(heldout) >= 20 and "goodfellas" in heldout
    assert heldout.isdisjoint(item["movie_name"].lower() for item in curated_albums())


def test_not_a_database(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(UserError, match="not a structune dataset"):
        DatasetStore(path)
