"""Training checkpoints: what a killed run needs to continue exactly where it stopped.

A run's checkpoints live in `<home>/checkpoints/<run key>/step-<N>/`, N being the steps
done. The run key hashes what decides the trained weights (base model, parent adapter,
dataset, config except how often to checkpoint), so the same command finds its own
checkpoints, and any two checkpoints of one run lie on the same deterministic path. A
checkpoint holds the trainable LoRA weights (`weights.safetensors`), the AdamW state and
the torch RNG states, CPU and CUDA (`trainer.pt`, read back with `weights_only=True`), and
the step, loss history, token count and time spent (`state.json`). The learning rate is a
pure function of the step, and so is the data order (the batch stream is replayed from the
seed and the first `step` batches skipped): the step is their whole state. In
data-parallel training all ranks hold the same weights and optimizer state, and rank 0
alone writes and prunes checkpoints; the world size is not part of the run key, so a run
can resume on more or fewer processes.

Writing is two-phase. The files go to a staging folder and are flushed to disk; then the
marker `COMPLETE` (each file's SHA-256) is written and flushed; then the folder is
renamed into place. Reading trusts a checkpoint only when its marker is there and every
file matches it; anything else in the run folder is a crash's leftover and is removed.
The newest `KEEP` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from structune.adapters import non_finite_weights
from structune.errors import StructuneError
from structune.fileio import fsync_tree, write_directory_atomically
from structune.hashing import content_hash
from structune.paths import home
from structune.train.config import TrainConfig

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
WEIGHTS = "weights.safetensors"
TRAINER = "trainer.pt"
STATE = "state.json"
KEEP = 2
_STEP_DIR = re.compile(r"step-(\d+)")
_T = TypeVar("_T")


@dataclass
class TrainState:
    """Where a run stands after `step` optimizer steps."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    state: TrainState
    weights: dict[str, Any]  # trainable parameter name -> tensor
    optimizer: dict[str, Any]  # the optimizer's state_dict
    torch_rng: Any  # torch.get_rng_state()
    cuda_rng: Any = None  # torch.cuda.get_rng_state() where CUDA was available


def checkpoints_dir() -> Path:
    return home() / "checkpoints"


def run_key(*, base: str, parent: str | None, dataset_hash: str, config: TrainConfig) -> str:
    """A short hash of what decides the trained weights."""
    settings = asdict(config)
    # how often a run saves, and whether it recomputes activations, change nothing it computes
    del settings["checkpoint_every"], settings["gradient_checkpointing"]
    identity = {"base": base, "parent": parent, "dataset": dataset_hash, "config": settings}
    return content_hash(identity, length=16)


class RunCheckpoints:
    """The checkpoints of one training run, in `checkpoints_dir()/<key>/`."""

    def __init__(self, key: str) -> None:
        self.path = checkpoints_dir() / key

    def latest(self) -> Path | None:
        """The newest complete checkpoint, if any; removes what crashes left behind."""
        if not self.path.is_dir():
            return None
        complete = []
        for entry in self.path.iterdir():
            step = _step_of(entry)
            if step is not None and _is_complete(entry):
                complete.append((step, entry))
            else:
                log.info("removing incomplete checkpoint %s (left by an interrupted save)", entry)
                _remove(entry)
        return max(complete)[1] if complete else None

    def save(self, model: Any, optimizer: Any, state: TrainState) -> Path:
        """Write a checkpoint of `model`'s trainable weights and `optimizer` at `state.step`.

        Raises:
            StructuneError: a weight is NaN or infinite (nothing is written), or the write
                failed (a full disk); the previous checkpoints are untouched.
        """
        import torch
        from safetensors.torch import save as safetensors_bytes

        target = self.path / f"step-{state.step}"
        bad = non_finite_weights(model)
        if bad:
            raise StructuneError(
                f"refusing to write checkpoint {target}: {len(bad)} weights are NaN or "
                f"infinite (first: {bad[0]})"
            )
        weights = {
            n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad
        }
        trainer = io.BytesIO()  # serialized in memory, so that a full disk fails as an OSError
        rng = {
            "torch_rng": torch.get_rng_state(),
            # dropout on a GPU draws from the CUDA generator
            "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        }
        torch.save({"optimizer": optimizer.state_dict(), **rng}, trainer)
        files = {
            WEIGHTS: safetensors_bytes(weights),
            TRAINER: trainer.getvalue(),
            STATE: json.dumps(asdict(state)).encode(),
        }

        def fill(staging: Path) -> None:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            fsync_tree(staging)  # the marker must not reach the disk before what it vouches for
            sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
            (staging / MARKER).write_text(json.dumps(sums))

        write_directory_atomically(target, fill)
        saved = sorted((s, p) for p in self.path.iterdir() if (s := _step_of(p)) is not None)
        for _, old in saved[:-KEEP]:
            _remove(old)
        return target

    def discard(self) -> None:
        """Remove the run's checkpoints (its adapter is saved; they are no longer needed)."""
        shutil.rmtree(self.path, ignore_errors=True)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder; tensors only, no pickled code (`weights_only=True`)."""
    import torch
    from safetensors.torch import load_file

    def read_trainer(file: Path) -> tuple[dict[str, Any], Any, Any]:
        trainer = torch.load(file, weights_only=True)
        return trainer["optimizer"], trainer["torch_rng"], trainer.get("cuda_rng")

    optimizer, torch_rng, cuda_rng = _read(path / TRAINER, read_trainer)
    return Checkpoint(
        path=path,
        state=_read(path / STATE, lambda file: TrainState(**json.loads(file.read_text()))),
        weights=_read(path / WEIGHTS, load_file),
        optimizer=optimizer,
        torch_rng=torch_rng,
        cuda_rng=cuda_rng,
    )


def _read(file: Path, reader: Callable[[Path], _T]) -> _T:
    """`reader(file)`, its failures turned into one error that names the file."""
    try:
        return reader(file)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False: the one thing not to do
        raise StructuneError(
            f"checkpoint file {file} holds pickled objects other than tensors; refused, as "
            f"loading it could run code. Delete {file.parent} to start the run over"
        ) from None
    except Exception as exc:  # torch, safetensors and json raise many types on bad files
        raise StructuneError(
            f"checkpoint file {file} is unreadable: {type(exc).__name__}: {exc}. "
            f"Delete {file.parent} to start the run over"
        ) from None


def restore(checkpoint: Checkpoint, model: Any, optimizer: Any) -> TrainState:
    """Put `checkpoint`'s weights, optimizer state and RNG back; return where the run stood."""
    import torch

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(checkpoint.weights) != trainable:
        raise StructuneError(
            f"checkpoint {checkpoint.path} does not fit this model's LoRA layers; "
            "delete it to start over"
        )
    model.load_state_dict(checkpoint.weights, strict=False)
    optimizer.load_state_dict(checkpoint.optimizer)
    torch.set_rng_state(checkpoint.torch_rng)
    if checkpoint.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint.cuda_rng)
    return checkpoint.state


def _is_complete(folder: Path) -> bool:
    try:
        sums = json.loads((folder / MARKER).read_text())
        return sorted(sums) == sorted([WEIGHTS, TRAINER, STATE]) and all(
            hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
            for name, digest in sums.items()
        )
    except (OSError, ValueError):
        return False


def _step_of(entry: Path) -> int | None:
    match = _STEP_DIR.fullmatch(entry.name)
    return int(match[1]) if match else None


def _remove(entry: Path) -> None:
    if entry.is_dir():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
