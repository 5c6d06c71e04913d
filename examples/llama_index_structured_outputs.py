"""The seed notebook, part one, run locally: "Fine Tuning Llama2 for Better Structured
Outputs With Gradient and LlamaIndex".

It follows the notebook cell by cell. Only the Gradient classes are replaced (see the
`# was:` comments), plus two things the notebook could not have had:

- Without `OPENAI_API_KEY` the teacher is offline: structune's curated album answers behind
  the same LlamaIndex LLM interface, for the curated movies (it cannot invent albums for the
  notebook's own list, which it does not know).
- At the end, a measurement instead of "# throws an error!": how many held-out movies get a
  valid `Album` from the base and the fine-tuned model, through the very same program.

Run: `.venv/bin/python examples/llama_index_structured_outputs.py` (the notebook's 2 x 200
steps take about 20 minutes on 2 CPU cores; `--max-steps 40` is enough to see the effect).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llama_index.core.callbacks import CallbackManager
from llama_index.core.output_parsers import PydanticOutputParser
from llama_index.core.program import LLMTextCompletionProgram
from pydantic import BaseModel

from structune.integrations.llama_index import (
    StructuneFinetuneEngine,  # was: GradientFinetuneEngine
    StructuneFinetuningHandler,  # was: GradientAIFineTuningHandler
    StructuneLLM,  # was: GradientBaseModelLLM, GradientModelAdapterLLM
)
from structune.tasks.albums import curated_albums, curated_teacher, heldout_movies


# %% Defining Pydantic Model + Program
class Song(BaseModel):
    """Data model for a song."""

    title: str
    length_seconds: int


class Album(BaseModel):
    """Data model for an album."""

    name: str
    artist: str
    songs: list[Song]


prompt_template_str = """\
Generate an example album, with an artist and a list of songs. \
Using the movie {movie_name} as inspiration.\
"""

# NOTE: we need >= 10 movies to use Gradient fine-tuning
movie_names = [
    "The Shining",
    "The Departed",
    "Titanic",
    "Goodfellas",
    "Pretty Woman",
    "Home Alone",
    "Caged Fury",
    "Edward Scissorhands",
    "Total Recall",
    "Ghost",
    "Tremors",
    "RoboCop",
    "Rocky V",
]


def teacher_llm(callback_manager: CallbackManager) -> object:
    """GPT-4 as in the notebook when a key is set; otherwise the offline curated teacher."""
    if os.environ.get("OPENAI_API_KEY"):
        from llama_index.llms.openai import OpenAI  # pip install llama-index-llms-openai

        return OpenAI(model="gpt-4", callback_manager=callback_manager)
    return StructuneLLM(backend=curated_teacher(), callback_manager=callback_manager)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("notebook-run"), help="work folder")
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--max-steps", type=int, default=200, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=500)
    parser.add_argument("--heldout", type=int, default=50, help="held-out movies to measure")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    # %% Log Inputs/Outputs
    finetuning_handler = StructuneFinetuningHandler()
    callback_manager = CallbackManager([finetuning_handler])
    llm_gpt4 = teacher_llm(callback_manager)
    openai_program = LLMTextCompletionProgram.from_defaults(
        output_parser=PydanticOutputParser(Album),
        prompt_template_str=prompt_template_str,
        llm=llm_gpt4,
        verbose=True,
    )
    names = movie_names
    if not os.environ.get("OPENAI_API_KEY"):
        # the offline teacher knows the curated movies only: the notebook's count of them
        names = [item["movie_name"] for item in curated_albums()][: len(movie_names) + 1]
    for movie_name in names:
        output = openai_program(movie_name=movie_name)
        print(output.model_dump_json())

    data_path = args.out / "mock_finetune_songs.jsonl"
    finetuning_handler.save_finetuning_events(data_path)

    # %% Fine-tune on the Dataset
    base_llm = StructuneLLM(model=args.base_model, max_tokens=args.max_tokens, is_chat_model=True)
    finetune_engine = StructuneFinetuneEngine(
        base_model=args.base_model,
        name="movies_structured",
        data_path=data_path,
        verbose=True,
        max_steps=args.max_steps,
        batch_size=1,
    )
    for i in range(args.epochs):
        print(f"** EPOCH {i} **")
        finetune_engine.finetune()
    print("adapter:", finetune_engine.model_adapter_id)
    ft_llm = finetune_engine.get_finetuned_model(max_tokens=args.max_tokens, is_chat_model=True)

    # %% Try it Out!
    new_prompt_template_str = """\
Generate an example album, with an artist and a list of songs. \
Using the movie {movie_name} as inspiration.\
Please only generate one album.
"""
    gradient_program = LLMTextCompletionProgram.from_defaults(
        output_parser=PydanticOutputParser(Album),
        prompt_template_str=new_prompt_template_str,
        llm=ft_llm,
        verbose=True,
    )
    show(gradient_program, "fine-tuned")

    # you wouldn't get this with normal llama2-7b!
    base_gradient_program = LLMTextCompletionProgram.from_defaults(
        output_parser=PydanticOutputParser(Album),
        prompt_template_str=prompt_template_str,
        llm=base_llm,
        verbose=True,
    )
    show(base_gradient_program, "base")  # throws an error

    # %% The numbers the notebook did not have
    movies = heldout_movies()[: args.heldout]
    print(f"\nvalid Album on {len(movies)} held-out movies (the training prompt):")
    for label, llm in [("base", base_llm), ("fine-tuned", ft_llm)]:
        program = LLMTextCompletionProgram.from_defaults(
            output_parser=PydanticOutputParser(Album),
            prompt_template_str=prompt_template_str,
            llm=llm,
        )
        valid = count_valid(program, llm, movies)
        print(f"  {label:<11} {valid}/{len(movies)} ({valid / len(movies):.0%})")


def show(program: LLMTextCompletionProgram, label: str) -> None:
    try:
        print(f"{label}: {program(movie_name='Goodfellas')!r}")
    except ValueError as exc:  # the output parser's error: no valid Album in the answer
        print(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")


def count_valid(program: LLMTextCompletionProgram, llm: StructuneLLM, movies: list[str]) -> int:
    """How many movies `program` turns into a valid Album: the program's own prompt and
    parser, with the model's batched decoding instead of one call per movie."""
    conversations = [
        [
            {"role": m.role.value, "content": m.content or ""}
            for m in program.prompt.format_messages(movie_name=movie)
        ]
        for movie in movies
    ]
    completions = llm.backend.complete_many(conversations, max_tokens=llm.max_tokens)
    valid = 0
    for completion in completions:
        try:
            program.prompt.output_parser.parse(completion.text)  # type: ignore[union-attr]
            valid += 1
        except ValueError:
            pass
    return valid


if __name__ == "__main__":
    main()
