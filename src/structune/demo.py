"""The main job: the notebook's album half, end to end, offline.

record a teacher (the curated set, or an API with `teacher=`) → LoRA fine-tune the base
model on at most 40 valid examples → compare base vs tuned, each with plain decoding and
under the schema's grammar (and the teacher, when it is an API), on held-out movies → a
table and the Goodfellas answer of each model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from structune.evaluate.compare import Comparison, compare
from structune.llms.base import LLM, Constrained
from structune.models.loading import DEFAULT_BASE_MODEL
from structune.record.recorder import RecordSummary, record
from structune.record.store import DatasetStore
from structune.tasks.albums import album_program, curated_albums, curated_teacher, heldout_movies
from structune.train.adapters import AdapterManifest
from structune.train.config import TrainConfig
from structune.train.lora import finetune

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    recording: RecordSummary
    adapter: AdapterManifest
    comparison: Comparison
    train_examples: int


def run_demo(
    *,
    teacher: LLM | None = None,
    base: str = DEFAULT_BASE_MODEL,
    store: DatasetStore,
    train_size: int = 40,
    heldout: int = 20,
    config: TrainConfig | None = None,
    max_tokens: int = 384,
    report_path: Path | None = None,
) -> DemoResult:
    """Run the album workflow; see the module docstring."""
    from structune.llms.local import LocalLLM

    program = album_program
    teacher = teacher or curated_teacher()
    movies = [{"movie_name": item["movie_name"]} for item in curated_albums()]
    log.info("1/3 recording %s answers from %s", program.name, teacher.model_id)
    recording = record(program, teacher, movies, store=store)

    examples = [
        e for e in store.examples(program.name, valid=True) if e.teacher == teacher.model_id
    ]
    conversations = [e.training_conversation() for e in examples[:train_size]]
    log.info("2/3 fine-tuning %s on %d examples", base, len(conversations))
    adapter = finetune(conversations, base=base, config=config, task=program.name)

    log.info("3/3 comparing on %d held-out movies", heldout)
    base_llm, tuned_llm = LocalLLM.load(base), LocalLLM.load(adapter=adapter.id)
    models: dict[str, LLM] = {
        f"base ({base})": base_llm,
        "base + grammar": Constrained(base_llm, program.json_schema),
        f"tuned ({adapter.id})": tuned_llm,
        "tuned + grammar": Constrained(tuned_llm, program.json_schema),
    }
    if not teacher.model_id.startswith("curated:"):  # the curated set knows no held-out movie
        models[f"teacher ({teacher.model_id})"] = teacher
    inputs = [{"movie_name": m} for m in heldout_movies()[:heldout]]
    comparison = compare(program, models, inputs, max_tokens=max_tokens)
    if report_path is not None:
        comparison.write_json(report_path)
    return DemoResult(recording, adapter, comparison, len(conversations))
