"""The LlamaIndex integration: the seed notebook's calls, with structune where Gradient stood."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.output_parsers import PydanticOutputParser
from llama_index.core.program import LLMTextCompletionProgram
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel

from structune import UserError
from structune.adapters import load_manifest
from structune.integrations.llama_index import (
    StructuneFinetuneEngine,
    StructuneFinetuningHandler,
    StructuneLLM,
)
from structune.llms.callable import CallableLLM
from structune.tasks.albums import Album, curated_albums, curated_teacher
from structune.train.sources import conversations_from_jsonl

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = (
    "Generate an example album, with an artist and a list of songs. "
    "Using the movie {movie_name} as inspiration."
)
MOVIES = [item["movie_name"] for item in curated_albums()]


def teacher_program(handler, *, is_chat_model=True):
    teacher = StructuneLLM(
        backend=curated_teacher(),
        callback_manager=CallbackManager([handler]),
        is_chat_model=is_chat_model,
    )
    return LLMTextCompletionProgram.from_defaults(
        output_parser=PydanticOutputParser(Album), prompt_template_str=TEMPLATE, llm=teacher
    )


def record_events(path, n, **kwargs):
    handler = StructuneFinetuningHandler()
    program = teacher_program(handler, **kwargs)
    for movie in MOVIES[:n]:
        program(movie_name=movie)
    handler.save_finetuning_events(path)
    return handler


@pytest.mark.parametrize("is_chat_model", [True, False])
def test_handler_records_each_call_as_the_chat_the_model_saw(tmp_path, capsys, is_chat_model):
    path = tmp_path / "events.jsonl"
    handler = record_events(path, 3, is_chat_model=is_chat_model)

    assert f"Wrote 3 examples to {path}" in capsys.readouterr().out
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(handler.get_finetuning_events()) == 3
    for line, movie in zip(lines, MOVIES, strict=False):
        user, answer = line["messages"]
        assert user["role"] == "user" and answer["role"] == "assistant"
        # the prompt as LlamaIndex formatted it: the template and the parser's schema
        assert f"Using the movie {movie} as inspiration" in user["content"]
        assert '"songs"' in user["content"]
        Album.model_validate_json(answer["content"])
    # the file is what structune trains on: every line is a usable example
    assert len(conversations_from_jsonl(path)) == 3


def test_handler_writes_utf8_not_escapes(tmp_path):
    handler = StructuneFinetuningHandler()
    llm = StructuneLLM(
        backend=CallableLLM(lambda _: '{"name": "Rocktäschel"}'),
        callback_manager=CallbackManager([handler]),
    )
    llm.complete("Who?")
    handler.save_finetuning_events(tmp_path / "e.jsonl")
    assert "Rocktäschel" in (tmp_path / "e.jsonl").read_text(encoding="utf-8")


def test_saving_no_events_says_why_instead_of_writing_an_empty_file(tmp_path):
    handler = StructuneFinetuningHandler()
    # the upstream pitfall: the handler is not on the LLM's callback manager
    program = LLMTextCompletionProgram.from_defaults(
        output_parser=PydanticOutputParser(Album),
        prompt_template_str=TEMPLATE,
        llm=StructuneLLM(backend=curated_teacher()),
    )
    program(movie_name=MOVIES[0])
    with pytest.raises(UserError, match="callback_manager"):
        handler.save_finetuning_events(tmp_path / "e.jsonl")
    assert not (tmp_path / "e.jsonl").exists()

    failing = teacher_program(handler)
    with pytest.raises(UserError, match="curated teacher only knows"):
        failing(movie_name="A Movie Nobody Curated")
    assert handler.failed_calls == 1
    with pytest.raises(UserError, match="raised an error"):
        handler.save_finetuning_events(tmp_path / "e.jsonl")


def test_engine_refuses_bad_data_before_training(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        StructuneFinetuneEngine(data_path=tmp_path / "missing.jsonl")
    few = tmp_path / "few.jsonl"
    record_events(few, 4)
    with pytest.raises(UserError, match=r"holds 4 usable examples.*at least 10"):
        StructuneFinetuneEngine(data_path=few)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:1"):
        StructuneFinetuneEngine(data_path=tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="adapter 'nope' not found"):
        StructuneFinetuneEngine(data_path=few, model_adapter_id="nope")


def test_engine_trains_continues_and_returns_the_tuned_llm(tmp_path, tiny_model_dir):
    data = tmp_path / "events.jsonl"
    record_events(data, 10)
    engine = StructuneFinetuneEngine(
        base_model=str(tiny_model_dir),
        name="movies_structured",
        data_path=data,
        max_steps=2,
        batch_size=1,
        verbose=False,
    )
    assert engine.model_adapter_id is None
    with pytest.raises(UserError, match="finetune"):
        engine.get_finetuned_model()

    engine.finetune()
    first = engine.model_adapter_id
    engine.finetune()  # the notebook's second epoch continues the same adapter
    second = load_manifest(engine.model_adapter_id)
    assert first is not None and second.parent == first
    assert second.dataset_size == 10 and second.steps == 2

    ft_llm = engine.get_finetuned_model(max_tokens=8, is_chat_model=True)
    assert ft_llm.metadata.model_name == f"{tiny_model_dir}+{second.id}"
    assert ft_llm.metadata.context_window == 2048  # the model's own
    assert ft_llm.metadata.num_output == 8 and ft_llm.metadata.is_chat_model
    response = ft_llm.complete("Hello")
    assert response.raw["completion_tokens"] <= 8

    # a later session continues from the id alone
    later = StructuneFinetuneEngine(data_path=data, model_adapter_id=second.id, max_steps=1)
    assert later.base_model == str(tiny_model_dir)


class Movie(BaseModel):
    """A film."""

    title: str
    year: int


@pytest.mark.slow
def test_constrained_structured_predict_returns_a_valid_object_from_the_base_model():
    llm = StructuneLLM(model="smollm2-135m", constrained=True, max_tokens=60)
    prompt = PromptTemplate("Name a famous film about {topic} and its year.")
    movie = llm.structured_predict(Movie, prompt, topic="the sea")
    assert isinstance(movie, Movie) and movie.title


def test_sampling_fields_reach_the_model_and_are_checked(tiny_model_dir):
    from structune.llms.local import LocalLLM

    backend = LocalLLM.load(str(tiny_model_dir), dtype="float32")

    def sampled(seed: int) -> str:
        llm = StructuneLLM(backend=backend, max_tokens=8, temperature=1.0, top_p=0.9, seed=seed)
        return llm.complete("Say something.").text

    assert sampled(1) == sampled(1)
    assert sampled(2) != sampled(1)
    with pytest.raises(ValueError, match="top_p"):
        StructuneLLM(backend=backend, top_p=0)
    with pytest.raises(ValueError, match="repetition_penalty"):
        StructuneLLM(backend=backend, repetition_penalty=float("nan"))


@pytest.mark.slow
def test_the_notebook_script_runs_end_to_end(tmp_path):
    env = {**os.environ, "OPENAI_API_KEY": ""}
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "llama_index_structured_outputs.py"),
            "--out",
            str(tmp_path),
            "--max-steps",
            "2",
            "--heldout",
            "2",
            "--max-tokens",
            "40",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "Wrote 14 examples" in out
    assert "** EPOCH 1 **" in out
    assert len((tmp_path / "mock_finetune_songs.jsonl").read_text().splitlines()) == 14
    adapter = out.split("adapter: ")[1].split()[0]
    assert load_manifest(adapter).parent is not None  # two epochs: a continued adapter
    assert "valid Album on 2 held-out movies" in out
