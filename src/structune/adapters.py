"""Adapters on disk: PEFT safetensors plus a manifest, addressed by id.

Each adapter is a folder `adapters_dir()/<id>/` holding what PEFT writes
(`adapter_config.json`, `adapter_model.safetensors`, loadable by any PEFT or vLLM
stack) and `structune.json`, the manifest: base model, dataset identity, training config,
loss history, parent adapter and library versions, so an adapter can be reproduced.
Adapters are immutable; continuing training writes a new adapter whose parent is the old.
Training writes them and inference, export and serving read them: the registry sits below
both, so that loading a tuned model never imports the trainer.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic

from structune.errors import BackendError, StructuneError, UserError
from structune.fileio import write_directory_atomically
from structune.paths import adapters_dir


@contextmanager
def peft_deprecations_hidden() -> Iterator[None]:
    """Wrapping a model, peft reads transformers' deprecated `is_gradient_checkpointing`:
    a FutureWarning on every adapter load and training run, with nothing for a user to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


MANIFEST_FILE = "structune.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # what PEFT writes; never a pickled .bin


class AdapterManifest(pydantic.BaseModel):
    id: str
    base_model: str
    parent: str | None = None
    task: str | None = None
    dataset_hash: str
    dataset_size: int
    config: dict[str, Any]
    loss_history: list[float]
    steps: int
    tokens_trained: int
    train_seconds: float
    created: str = pydantic.Field(default_factory=lambda: datetime.now(UTC).isoformat())
    versions: dict[str, str] = pydantic.Field(default_factory=dict)
    # The system message every training conversation opened with (None: none, or several):
    # what a server or an Ollama Modelfile must send for the adapter to see what it learned.
    system_prompt: str | None = None

    @property
    def path(self) -> Path:
        return adapters_dir() / self.id


def list_adapters() -> list[AdapterManifest]:
    """All saved adapters, oldest first."""
    root = adapters_dir()
    paths = sorted(root.glob(f"*/{MANIFEST_FILE}"))
    # `.<id>.partial-<pid>` folders are adapters still being written (or left by a crash)
    manifests = [_read_manifest(p) for p in paths if not p.parent.name.startswith(".")]
    return sorted(manifests, key=lambda m: m.created)


def load_manifest(adapter_id: str) -> AdapterManifest:
    """The manifest of adapter `adapter_id`.

    Raises:
        UserError: no such adapter; the message lists the known ones.
    """
    path = adapters_dir() / adapter_id / MANIFEST_FILE
    if "/" in adapter_id or not path.is_file():
        known = ", ".join(m.id for m in list_adapters()) or "none yet"
        raise UserError(
            f"adapter {adapter_id!r} not found in {adapters_dir()}; known adapters: {known}; "
            "list them with `structune adapters`"
        )
    return _read_manifest(path)


def remove_adapter(adapter_id: str) -> Path:
    """Delete adapter `adapter_id`'s folder; return where it was.

    Raises:
        UserError: no such adapter (the message lists the known ones).
    """
    path = load_manifest(adapter_id).path
    shutil.rmtree(path)
    return path


def save_adapter(peft_model: Any, manifest: AdapterManifest) -> Path:
    """Write the adapter weights and manifest, atomically (a crash leaves no half adapter).

    Raises:
        StructuneError: a trainable weight is NaN or infinite (nothing is written), or the
            write failed (a full disk); the message names the adapter folder.
    """
    target = manifest.path
    bad = non_finite_weights(peft_model)
    if bad:
        raise StructuneError(
            f"refusing to save adapter {manifest.id}: {len(bad)} weights are NaN or infinite "
            f"(first: {bad[0]}); lower the learning rate or check the data"
        )

    def fill(staging: Path) -> None:
        peft_model.save_pretrained(staging)
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))

    write_directory_atomically(target, fill)
    return target


def non_finite_weights(peft_model: Any) -> list[str]:
    """Names of the trainable tensors that hold a NaN or an infinity."""
    import torch

    return [
        name
        for name, p in peft_model.named_parameters()
        if p.requires_grad and not bool(torch.isfinite(p).all())
    ]


def _read_manifest(path: Path) -> AdapterManifest:
    try:
        return AdapterManifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise BackendError(f"adapter manifest {path} is unreadable: {exc}") from None
