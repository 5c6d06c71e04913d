"""Training survives interruption: checkpoints, resume, non-finite losses, a full disk.

All on the tiny Llama from conftest. The slow test kills `structune train` with SIGKILL
again and again, mostly while it is writing a checkpoint, and checks that the final
adapter equals that of a run never interrupted.
"""

import json
import logging
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from structune import StructuneError, TrainConfig, UserError, finetune
from structune.adapters import load_manifest
from structune.train.checkpoints import (
    MARKER,
    WEIGHTS,
    RunCheckpoints,
    checkpoints_dir,
    load_checkpoint,
)
from training_data import conversations

TESTS = Path(__file__).resolve().parents[1]  # the shared helpers (training_data)

CONFIG = TrainConfig(
    max_steps=8,
    batch_size=2,
    learning_rate=1e-2,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.1,  # dropout draws random numbers: resuming must restore the RNG too
    checkpoint_every=2,
)


def max_weight_difference(adapter_a: Path, adapter_b: Path) -> float:
    a = load_file(adapter_a / "adapter_model.safetensors")
    b = load_file(adapter_b / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def stop_after_saving(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Interrupt training (as Ctrl-C would) right after the checkpoint of `step` is saved."""
    save = RunCheckpoints.save

    def save_then_stop(self, model, optimizer, state):
        path = save(self, model, optimizer, state)
        if state.step == step:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(RunCheckpoints, "save", save_then_stop)


def only_run_dir() -> Path:
    (run,) = [p for p in checkpoints_dir().iterdir() if p.is_dir()]
    return run


def test_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path))
    data, base = conversations(), str(tiny_model_dir)
    straight = finetune(data, base=base, config=CONFIG, progress=False)
    assert not list(checkpoints_dir().iterdir())  # a finished run removes its checkpoints

    with monkeypatch.context() as patch:
        stop_after_saving(patch, 6)
        with pytest.raises(KeyboardInterrupt):
            finetune(data, base=base, config=CONFIG, progress=False)
    run = only_run_dir()
    assert sorted(p.name for p in run.iterdir()) == ["step-4", "step-6"]  # the newest two
    checkpoint = load_checkpoint(run / "step-6")
    assert checkpoint.state.step == 6 and checkpoint.state.losses == straight.loss_history[:6]
    assert (
        checkpoint.optimizer["state"]
        and checkpoint.weights.keys() == load_file(run / "step-4" / WEIGHTS).keys()
    )

    # Without resume the checkpoint is reported, not silently used or dropped.
    with monkeypatch.context() as patch, caplog.at_level(logging.INFO, "structune"):
        stop_after_saving(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            finetune(data, base=base, config=CONFIG, progress=False)
    assert "checkpoint at step-6 of 8" in caplog.text and "starting over" in caplog.text
    caplog.clear()

    with caplog.at_level(logging.INFO, "structune"):
        resumed = finetune(data, base=base, config=CONFIG, progress=False, resume=True)
    assert "resuming from step-6 of 8" in caplog.text
    assert resumed.loss_history == straight.loss_history
    assert resumed.tokens_trained == straight.tokens_trained
    assert max_weight_difference(straight.path, resumed.path) < 1e-6
    assert not run.exists()


def test_a_run_resumes_with_gradient_checkpointing_to_the_same_adapter(
    tiny_model_dir, tmp_path, monkeypatch
):
    # what a run that ran out of memory does: the same run key, activations recomputed
    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path))
    data, base = conversations(), str(tiny_model_dir)
    straight = finetune(data, base=base, config=CONFIG, progress=False)
    with monkeypatch.context() as patch:
        stop_after_saving(patch, 4)
        with pytest.raises(KeyboardInterrupt):
            finetune(data, base=base, config=CONFIG, progress=False)

    recomputing = replace(CONFIG, gradient_checkpointing=True)
    resumed = finetune(data, base=base, config=recomputing, progress=False, resume=True)
    assert (
        resumed.config["gradient_checkpointing"] and not straight.config["gradient_checkpointing"]
    )
    assert resumed.loss_history[:4] == straight.loss_history[:4]  # read from the checkpoint
    assert resumed.loss_history[4:] == pytest.approx(straight.loss_history[4:], abs=1e-5)
    assert max_weight_difference(straight.path, resumed.path) < 1e-5


def test_half_written_and_damaged_checkpoints_are_ignored_and_removed(
    tiny_model_dir, tmp_path, monkeypatch
):
    import shutil

    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path))
    stop_after_saving(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        finetune(conversations(2), base=str(tiny_model_dir), config=CONFIG, progress=False)
    run = only_run_dir()
    good = run / "step-2"
    shutil.copytree(good, run / ".step-4.partial-12345")  # killed before the rename
    shutil.copytree(good, run / "step-6")
    (run / "step-6" / MARKER).unlink()  # no marker: never trusted
    shutil.copytree(good, run / "step-8")
    weights = run / "step-8" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-8])  # truncated after the marker was written

    assert RunCheckpoints(run.name).latest() == good
    assert sorted(p.name for p in run.iterdir()) == ["step-2"]
    assert load_checkpoint(good).state.step == 2


def test_non_finite_loss_stops_within_a_step_and_saves_nothing_non_finite(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path))
    config = TrainConfig(
        max_steps=30, batch_size=2, learning_rate=1e30, lora_r=4, checkpoint_every=1
    )
    with pytest.raises(UserError, match=r"training stopped at step \d+ of 30") as stopped:
        finetune(conversations(4), base=str(tiny_model_dir), config=config, progress=False)
    failed_at = int(str(stopped.value).split("step ")[1].split()[0])
    assert "no adapter was saved" in str(stopped.value)

    assert not (tmp_path / "adapters").exists() or not list((tmp_path / "adapters").iterdir())
    saved = sorted(only_run_dir().iterdir(), key=lambda p: int(p.name.split("-")[1]))
    # the last checkpoint is the step just before the one that failed: it stopped at once
    assert saved[-1].name == f"step-{failed_at - 1}"
    for checkpoint in map(load_checkpoint, saved):
        assert all(torch.isfinite(t).all() for t in checkpoint.weights.values())
        assert all(torch.isfinite(torch.tensor(x)) for x in checkpoint.state.losses)


def test_non_finite_weights_are_never_written(tiny_model_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from structune.adapters import AdapterManifest, save_adapter
    from structune.train.checkpoints import TrainState

    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path))
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    name, weight = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        weight[0, 0] = float("nan")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    manifest = AdapterManifest(
        id="poisoned", base_model="tiny", dataset_hash="x", dataset_size=1, config={},
        loss_history=[1.0], steps=1, tokens_trained=1, train_seconds=0.1,
    )  # fmt: skip

    with pytest.raises(StructuneError, match=f"NaN or infinite.*{name}"):
        save_adapter(model, manifest)
    with pytest.raises(StructuneError, match=f"NaN or infinite.*{name}"):
        RunCheckpoints("run").save(model, optimizer, TrainState(step=1))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


DISK_FULL_SCRIPT = """
import json, resource, signal, sys
from structune import StructuneError, TrainConfig, finetune
from structune.train.checkpoints import RunCheckpoints
from training_data import conversations

base, data = sys.argv[1], conversations(2)
config = TrainConfig(max_steps=4, batch_size=2, lora_r=4, checkpoint_every=1)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)


def disk_full(limit=1000):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))


def disk_freed():
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


previous = finetune(data, base=base, config=config, task="previous", progress=False)
save = RunCheckpoints.save


def save_then_fill_the_disk(self, model, optimizer, state):
    path = save(self, model, optimizer, state)
    disk_full()
    return path


RunCheckpoints.save = save_then_fill_the_disk
errors = {}
try:
    finetune(data, base=base, config=config, task="checkpoint", progress=False)
except StructuneError as exc:
    errors["checkpoint"] = str(exc)
RunCheckpoints.save = save
disk_freed()

disk_full()
try:
    finetune(data, base=base, config=config.__class__(max_steps=1, batch_size=2, lora_r=4),
             task="adapter", progress=False)
except StructuneError as exc:
    errors["adapter"] = str(exc)
disk_freed()
print(json.dumps({"previous": previous.id, "errors": errors}))
"""


def test_disk_full_while_saving_is_a_clear_error_and_what_was_saved_still_loads(
    tiny_model_dir, tmp_path, monkeypatch
):
    from structune.llms.local import LocalLLM

    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(tiny_model_dir)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(Path(__file__).parent)])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    run = only_run_dir()
    assert result["errors"]["checkpoint"].startswith(f"could not write {run / 'step-2'}: ")
    assert "File too large" in result["errors"]["checkpoint"]
    assert "free disk space" in result["errors"]["checkpoint"]
    assert "could not write" in result["errors"]["adapter"]
    assert str(tmp_path / "adapters") in result["errors"]["adapter"]

    # No half-written folder is left; the previous adapter and checkpoint load and serve.
    assert [p.name for p in (tmp_path / "adapters").iterdir()] == [result["previous"]]
    assert [p.name for p in run.iterdir()] == ["step-1"]
    llm = LocalLLM.load(adapter=result["previous"], dtype="float32")
    assert llm.complete_many([[{"role": "user", "content": "Hi"}]], max_tokens=2)
    resumed = finetune(
        conversations(2),
        base=str(tiny_model_dir),
        config=TrainConfig(max_steps=4, batch_size=2, lora_r=4, checkpoint_every=1),
        task="checkpoint",
        progress=False,
        resume=True,
    )
    assert resumed.steps == 4 and load_manifest(resumed.id) == resumed


TRAIN_CLI = "import sys; from structune.cli import main; sys.exit(main(sys.argv[1:]))"


def train_flags(jsonl: Path, base: Path, steps: int) -> list[str]:
    return [
        "train", "--jsonl", str(jsonl), "--base", str(base), "--max-steps", str(steps),
        "--batch-size", "2", "--lora-r", "4", "--learning-rate", "0.01",
    ]  # fmt: skip


def wait_for(condition, child: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll `condition` every half millisecond until it holds or `child` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            return False
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.0005)
    return True


@pytest.mark.slow
def test_killed_again_and_again_while_saving_it_resumes_to_the_same_adapter(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    from structune.cli import main

    jsonl = tmp_path / "albums.jsonl"
    jsonl.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations(6)))
    steps = 60
    flags = train_flags(jsonl, tiny_model_dir, steps)

    monkeypatch.setenv("STRUCTUNE_HOME", str(tmp_path / "straight"))
    started = time.perf_counter()
    assert main(["-q", *flags, "--checkpoint-every", "0"]) == 0
    straight_seconds = time.perf_counter() - started
    straight = Path(capsys.readouterr().out.split("saved in ")[1].strip())

    home = tmp_path / "killed"
    monkeypatch.setenv("STRUCTUNE_HOME", str(home))
    run_root = home / "checkpoints"

    def names() -> list[str]:
        return [n for run in os.listdir(run_root) for n in os.listdir(run_root / run)]

    def newest() -> int:
        return max([int(n[5:]) for n in names() if n.startswith("step-")], default=0)

    def saving() -> bool:
        return any(".partial-" in n for n in names())

    rng = random.Random(8)
    kills, in_save, damaged, resumed_at = 0, 0, 0, 0
    started = time.perf_counter()
    while True:
        child = subprocess.Popen(
            [sys.executable, "-c", TRAIN_CLI, *flags, "--resume", "--checkpoint-every", "1"],
            env={**os.environ, "STRUCTUNE_HOME": str(home), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if in_save >= 10 and kills >= 12:
            break
        before = newest() if run_root.exists() else 0
        # Kill only after one more checkpoint is complete, so every attempt progresses.
        progressed = wait_for(lambda b=before: run_root.exists() and newest() > b, child)
        if kills % 3 == 2:  # now and then a moment anywhere in a step, not only in a save
            progressed = progressed and child.poll() is None
            time.sleep(rng.uniform(0, 0.2))
        else:  # mostly: as soon as a checkpoint is being written, or a moment later
            progressed = progressed and wait_for(saving, child)
            time.sleep(rng.uniform(0, 0.003))
        assert progressed, f"training ended before it was killed:\n{child.communicate()[1]}"
        child.kill()
        _, stderr = child.communicate()
        kills += 1
        if kills > 1:
            assert f"resuming from step-{resumed_at} of {steps}" in stderr
        (run,) = run_root.iterdir()
        left = {p.name for p in run.iterdir()}
        in_save += any(".partial-" in name for name in left)

        latest = RunCheckpoints(run.name).latest()  # removes the leftovers
        kept = {p.name for p in run.iterdir()}
        assert latest is not None and kept <= left and all(n.startswith("step-") for n in kept)
        damaged += sum(name.startswith("step-") for name in left - kept)  # killed mid-prune
        checkpoint = load_checkpoint(latest)
        resumed_at = checkpoint.state.step
        assert resumed_at > before and len(checkpoint.state.losses) == resumed_at
        assert all(torch.isfinite(t).all() for t in checkpoint.weights.values())

    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    assert f"resuming from step-{resumed_at} of {steps}" in stderr
    (adapter,) = (home / "adapters").iterdir()
    difference = max_weight_difference(straight, adapter)
    print(
        f"\n{kills} kills, {in_save} inside a checkpoint save, {damaged} half-pruned; "
        f"max |straight - resumed| = {difference:.2e}; straight run {straight_seconds:.1f} s, "
        f"killed and resumed runs {time.perf_counter() - started:.1f} s"
    )
    assert difference < 1e-5
    assert load_manifest(adapter.name).steps == steps and not run.exists()
