"""The main job's wiring, with tiny budgets: record → fine-tune → compare four rows."""

import pytest

from structune import DatasetStore, TrainConfig
from structune.demo import run_demo

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
            "tuned + grammar",
        ]
        assert all(s.answers == 2 for s in result.comparison.scores)
        assert (tmp_path / "report.json").is_file()
        # a second run records nothing new: the store already has every curated answer
        again = run_demo(
            store=store, heldout=1, config=TrainConfig(max_steps=1, lora_r=4), max_tokens=8
        )
        assert again.recording.recorded == 0 and again.recording.skipped >= 40
