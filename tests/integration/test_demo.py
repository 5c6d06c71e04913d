"""The main job's wiring, with tiny budgets: record → fine-tune → compare four rows."""

import json

import pytest

from structune import DatasetStore, Sampling, TrainConfig
from structune.demo import run_demo, run_rag_demo

pytestmark = pytest.mark.slow


def test_demo_records_trains_and_compares(smollm2_dir, tmp_path):
    with DatasetStore(tmp_path / "demo.sqlite") as store:
        result = run_demo(
            store=store,
            heldout=2,
            config=TrainConfig(max_steps=2, batch_size=2, lora_r=4),
            max_tokens=32,
            report_path=tmp_path / "report.json",
        )
        assert result.recording.recorded >= 40 and result.recording.invalid == 0
        assert result.train_examples == 40
        assert [s.model for s in result.comparison.scores] == [
            "base (smollm2-135m)",
            "base + grammar",
            f"tuned ({result.adapter.id})",
            "tuned + grammar + distinct",
        ]
        assert all(s.answers == 2 for s in result.comparison.scores)
        for answer in result.comparison.answers["tuned + grammar + distinct"]:
            if answer.valid:
                titles = [song["title"].casefold() for song in json.loads(answer.text)["songs"]]
                assert len(set(titles)) == len(titles), answer.text
        assert (tmp_path / "report.json").is_file()
        # a second run records nothing new: the store already has every curated answer
        again = run_demo(
            store=store,
            heldout=1,
            config=TrainConfig(max_steps=1, lora_r=4),
            max_tokens=8,
            sampling=Sampling(temperature=0.8, seed=0),  # `structune demo --temperature 0.8`
        )
        assert again.recording.recorded == 0 and again.recording.skipped >= 40


def test_rag_demo_ingests_records_through_retrieval_trains_and_scores(smollm2_dir, tmp_path):
    with DatasetStore(tmp_path / "demo.sqlite") as store:
        result = run_rag_demo(
            store=store,
            train_size=6,
            heldout=2,
            config=TrainConfig(max_steps=2, batch_size=2, lora_r=4, max_length=4096),
            max_tokens=32,
        )
        # far above chance (1 in ~50 chunks); the sample paper repeats its phrasing, so not higher
        assert result.pdf.name == "sample-paper.pdf" and result.retrieval_hit_rate > 0.25
        assert result.recording.recorded == 6 and result.train_examples == 6
        # the recorded prompts hold the retrieved context: the student learns context → JSON
        example = store.examples("citations")[0]
        assert example.inputs["context_str"] in example.messages[-1]["content"]
        teacher = "teacher (rules:citations)"
        assert list(result.citation_scores) == [s.model for s in result.comparison.scores]
        assert result.citation_scores[teacher].f1 == 1.0  # the gold is the teacher's rules
        assert all(s.answers == 2 for s in result.comparison.scores)
