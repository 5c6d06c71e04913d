"""Data-parallel training under torchrun matches training in one process.

The slow test resumes a single-process run's checkpoint under `torchrun --nproc-per-node 2`
(gloo on CPU, one thread per rank), so one launch covers what matters: the adapter equals
that of a single process on the same global batches, a rank left without an example in a
short batch still joins the step, rank 0 alone reads and writes checkpoints and the
adapter, and a non-finite loss stops every rank at the same step.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from test_train_resume import max_weight_difference, stop_after_saving

from structune import TrainConfig, finetune
from structune.train.checkpoints import checkpoints_dir
from structune.train.data import TokenizedExample, training_batches
from structune.train.distributed import Ranks
from training_data import conversations

TESTS = Path(__file__).resolve().parents[1]  # the shared helpers (training_data)

EXAMPLES = 5  # with global batches of 2, every third batch holds one example
CONFIG = TrainConfig(
    max_steps=6, batch_size=2, learning_rate=1e-2, lora_r=4, lora_alpha=8, checkpoint_every=2
)

RANK_SCRIPT = """
import json, os, sys
from structune import TrainConfig, UserError, finetune
from training_data import conversations

base, examples, config = sys.argv[1], int(sys.argv[2]), TrainConfig(**json.loads(sys.argv[3]))
reports = sys.argv[4]
resumed = finetune(conversations(examples), base=base, config=config, progress=False, resume=True)
try:
    exploding = TrainConfig(max_steps=20, batch_size=2, learning_rate=1e30, lora_r=4)
    finetune(conversations(examples), base=base, config=exploding, progress=False)
    stopped = None
except UserError as exc:
    stopped = str(exc)
report = {"rank": os.environ["RANK"], "adapter": resumed.id, "losses": resumed.loss_history}
with open(os.path.join(reports, f"rank-{os.environ['RANK']}.json"), "w") as file:
    json.dump({**report, "stopped": stopped}, file)
"""


def test_each_rank_takes_every_other_example_of_a_batch():
    batch = [TokenizedExample([i], [i]) for i in range(5)]
    shares = [Ranks(rank=r, world_size=2).share(batch) for r in range(2)]
    assert sorted(shares[0] + shares[1], key=lambda e: e.input_ids) == batch
    assert Ranks(rank=1, world_size=2).share(batch[:1]) == []


def run_two_ranks(script: Path, home: Path, base: Path) -> list[dict]:
    # each rank writes its report to a file of its own: the ranks share torchrun's stdout,
    # where their lines can interleave (CI once got one line holding both reports)
    reports = script.parent / "reports"
    reports.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(script), str(base), str(EXAMPLES), json.dumps(asdict(CONFIG)), str(reports),
    ]  # fmt: skip
    env = {
        **os.environ,
        "STRUCTUNE_HOME": str(home),
        "OMP_NUM_THREADS": "1",  # two ranks on two cores: one thread each
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(Path(__file__).parent)]),
    }
    # a session of its own, so that a hang kills the ranks too, not only torchrun
    launcher = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = launcher.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise
    assert launcher.returncode == 0, stderr[-3000:]
    return [json.loads((reports / f"rank-{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_ranks_resume_and_train_the_adapter_one_process_trains(
    tiny_model_dir, tmp_path, monkeypatch
):
    data, base = conversations(EXAMPLES), str(tiny_model_dir)
    lengths = [TokenizedExample([0] * n, [0] * n) for n in range(1, EXAMPLES + 1)]
    batches = training_batches(
        lengths,
        batch_size=CONFIG.batch_size,
        seed=CONFIG.seed,
        group_by_length=CONFIG.group_by_length,
    )
    sizes = [len(b) for b in itertools.islice(batches, CONFIG.max_steps)]
    assert 1 in sizes[2:]  # a step after the resume leaves rank 1 without an example

    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path / "single"))
    straight = finetune(data, base=base, config=replace(CONFIG, checkpoint_every=0), progress=False)
    straight_adapter = straight.path  # under this home

    home = tmp_path / "two-ranks"
    monkeypatch.setenv("STRUCTUNE_HOME", str(home))
    with monkeypatch.context() as patch:
        stop_after_saving(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            finetune(data, base=base, config=CONFIG, progress=False)

    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    started = time.perf_counter()
    ranks = run_two_ranks(script, home, tiny_model_dir)
    seconds = time.perf_counter() - started

    assert [r["rank"] for r in ranks] == ["0", "1"]
    assert ranks[0]["adapter"] == ranks[1]["adapter"] and ranks[0]["losses"] == ranks[1]["losses"]
    assert ranks[0]["losses"][:2] == straight.loss_history[:2]  # from the checkpoint
    # float noise only: shares of a shuffled batch pad differently from the whole batch
    assert ranks[0]["losses"] == pytest.approx(straight.loss_history, rel=1e-4)
    # one adapter, written once; the exploding run wrote none
    (adapter,) = (home / "adapters").iterdir()
    difference = max_weight_difference(straight_adapter, adapter)
    print(f"\nmax |one process - two ranks| = {difference:.2e}; torchrun took {seconds:.1f} s")
    assert difference < 3e-4  # measured 8e-5 here: float noise, as for the losses above

    assert not checkpoints_dir().exists() or not list(checkpoints_dir().iterdir())

    stopped = {r["stopped"] for r in ranks}  # the same step on both ranks
    assert len(stopped) == 1 and "training stopped at step" in stopped.pop()
