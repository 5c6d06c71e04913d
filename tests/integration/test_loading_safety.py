"""Loading runs no foreign code, and bad files fail with a clear error.

Every test feeds a real file through a real loading path: a pickle whose unpickling
would create a marker file (checkpoint `trainer.pt`, an adapter's or a model's `.bin`),
chat templates that try to escape the Jinja sandbox, and truncated or random
safetensors and GGUF files. The marker must never appear, and the error must be a
structune error naming the file. A static scan of `src/` backs this up.
"""

import ast
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from structune.errors import BackendError, StructuneError, UserError
from structune.llms.local import LocalLLM
from structune.models.chat import render_chat
from structune.models.loading import builtin_gguf_path, load_model
from structune.paths import adapters_dir
from structune.train.checkpoints import (
    MARKER,
    STATE,
    TRAINER,
    WEIGHTS,
    RunCheckpoints,
    checkpoints_dir,
    load_checkpoint,
)

SRC = Path(__file__).resolve().parents[2] / "src"


class _Payload:
    """Unpickling this calls `Path.touch(marker)`: foreign code run by a loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def _write_payload(path: Path, marker: Path) -> None:
    torch.save({"state": _Payload(marker)}, path)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def test_the_payload_is_live(tmp_path: Path, marker: Path) -> None:
    # the other tests mean something only if a plain unpickling does run the payload
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


# --- checkpoints -------------------------------------------------------------------


def _checkpoint(run: str, files: dict[str, bytes]) -> Path:
    """A checkpoint folder whose COMPLETE marker vouches for `files` (so resume trusts it)."""
    folder = checkpoints_dir() / run / "step-1"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (folder / MARKER).write_text(json.dumps(sums))
    return folder


def _weights_bytes(tmp_path: Path) -> bytes:
    save_file({"lora_A": torch.zeros(2, 2)}, tmp_path / "w.safetensors")
    return (tmp_path / "w.safetensors").read_bytes()


def test_pickled_code_in_trainer_pt_is_refused(tmp_path: Path, marker: Path) -> None:
    _write_payload(tmp_path / "trainer.pt", marker)
    state = json.dumps({"step": 1, "losses": [1.0], "tokens": 3, "seconds": 0.1}).encode()
    files = {
        WEIGHTS: _weights_bytes(tmp_path),
        TRAINER: (tmp_path / "trainer.pt").read_bytes(),
        STATE: state,
    }
    _checkpoint("pickle-run", files)

    latest = RunCheckpoints("pickle-run").latest()  # how resume finds it
    assert latest is not None
    with pytest.raises(StructuneError, match=re.escape(TRAINER)) as caught:
        load_checkpoint(latest)
    assert str(latest) in str(caught.value)
    assert "weights_only=False" not in str(caught.value)  # torch's advice, not ours
    assert not marker.exists()


def test_truncated_checkpoint_weights_name_the_file(tmp_path: Path) -> None:
    trainer = tmp_path / "trainer.pt"
    torch.save({"optimizer": {}, "torch_rng": torch.get_rng_state()}, trainer)
    state = json.dumps({"step": 1, "losses": [1.0], "tokens": 3, "seconds": 0.1}).encode()
    files = {WEIGHTS: _weights_bytes(tmp_path)[:20], TRAINER: trainer.read_bytes(), STATE: state}
    folder = _checkpoint("truncated-run", files)

    with pytest.raises(StructuneError, match=re.escape(WEIGHTS)) as caught:
        load_checkpoint(folder)
    assert str(folder) in str(caught.value)


# --- adapters ----------------------------------------------------------------------


def _adapter(tiny_model_dir: Path, adapter_id: str) -> Path:
    """A real PEFT adapter over the tiny model, with a structune manifest."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = adapters_dir() / adapter_id
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(folder)
    manifest = {
        "id": adapter_id,
        "base_model": str(tiny_model_dir),
        "dataset_hash": "0" * 16,
        "dataset_size": 1,
        "config": {},
        "loss_history": [1.0],
        "steps": 1,
        "tokens_trained": 1,
        "train_seconds": 0.1,
    }
    (folder / "structune.json").write_text(json.dumps(manifest))
    return folder


def test_adapter_with_only_a_pickled_bin_is_refused(tiny_model_dir: Path, marker: Path) -> None:
    folder = _adapter(tiny_model_dir, "pickled-adapter")
    (folder / "adapter_model.safetensors").unlink()
    _write_payload(folder / "adapter_model.bin", marker)

    with pytest.raises(BackendError, match=re.escape("adapter_model.safetensors")) as caught:
        LocalLLM.load(str(tiny_model_dir), adapter="pickled-adapter", dtype="float32")
    assert str(folder) in str(caught.value)
    assert not marker.exists()


def test_a_pickled_bin_beside_the_safetensors_is_ignored(
    tiny_model_dir: Path, marker: Path
) -> None:
    folder = _adapter(tiny_model_dir, "bin-beside")
    _write_payload(folder / "adapter_model.bin", marker)
    _write_payload(folder / "pytorch_model.bin", marker)

    llm = LocalLLM.load(str(tiny_model_dir), adapter="bin-beside", dtype="float32")
    assert llm.model_id.endswith("+bin-beside")
    assert not marker.exists()


def test_truncated_adapter_safetensors_is_a_clear_error(tiny_model_dir: Path) -> None:
    folder = _adapter(tiny_model_dir, "truncated-adapter")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    with pytest.raises(BackendError, match=re.escape("adapter_model.safetensors")) as caught:
        LocalLLM.load(str(tiny_model_dir), adapter="truncated-adapter", dtype="float32")
    assert str(folder) in str(caught.value)


# --- model directories -------------------------------------------------------------


def _model_copy(tiny_model_dir: Path, out: Path) -> Path:
    shutil.copytree(tiny_model_dir, out)
    return out


def test_model_dir_with_only_pytorch_model_bin_is_refused(
    tiny_model_dir: Path, tmp_path: Path, marker: Path
) -> None:
    model_dir = _model_copy(tiny_model_dir, tmp_path / "bin-model")
    (model_dir / "model.safetensors").unlink()
    _write_payload(model_dir / "pytorch_model.bin", marker)

    with pytest.raises(UserError, match=re.escape("pytorch_model.bin")) as caught:
        load_model(str(model_dir))
    assert str(model_dir) in str(caught.value)
    assert not marker.exists()


def test_truncated_model_safetensors_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _model_copy(tiny_model_dir, tmp_path / "truncated-model")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])

    with pytest.raises(BackendError) as caught:
        load_model(str(model_dir))
    assert str(model_dir) in str(caught.value)


# --- chat templates ----------------------------------------------------------------

INJECTIONS = [
    "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ joiner.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "{% for m in messages %}{{ m.__class__.__init__.__globals__ }}{% endfor %}",
    "{{ messages.append({'role': 'system', 'content': 'x'}) }}",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_chat_template_injection_does_not_execute(
    template: str, tiny_model_dir: Path, tmp_path: Path, marker: Path
) -> None:
    from transformers import AutoTokenizer

    model_dir = tmp_path / "evil-template"
    model_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, model_dir / name)
    (model_dir / "chat_template.jinja").write_text(template.replace("MARKER", str(marker)))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    with pytest.raises(UserError, match="chat template") as caught:
        render_chat(tokenizer, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert str(model_dir) in str(caught.value)
    assert not marker.exists()


# --- GGUF --------------------------------------------------------------------------

_RESOLVE_EACH = """
import sys
from structune.errors import StructuneError
from structune.models.loading import resolve_model
for path in sys.argv[1:]:
    try:
        resolve_model(path)
        print("LOADED", path)
    except StructuneError as exc:
        print(type(exc).__name__, str(exc).replace("\\n", " "))
"""


def test_truncated_and_random_gguf_files_are_clear_errors(tmp_path: Path) -> None:
    data = builtin_gguf_path("smollm2-135m").read_bytes()
    cases = {
        "truncated-header.gguf": data[:4096],
        "truncated-tensors.gguf": data[: len(data) // 2],
        "random.gguf": os.urandom(1 << 16),
        "empty.gguf": b"",
    }
    paths = []
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        paths.append(str(tmp_path / name))

    # in a child process: a reader that crashed the interpreter would show as a signal
    result = subprocess.run(
        [sys.executable, "-c", _RESOLVE_EACH, *paths],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(paths), result.stdout
    for path, line in zip(paths, lines, strict=True):
        assert line.startswith("BackendError cannot read GGUF file " + path), line


# --- static scan -------------------------------------------------------------------


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _is_torch_load(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "load"
        and isinstance(func.value, ast.Name)
        and func.value.id == "torch"
    )


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def test_source_loads_no_pickles_and_trusts_no_remote_code() -> None:
    unsafe = []
    for path in sorted(SRC.rglob("*.py")):
        for call in _calls(ast.parse(path.read_text(), filename=str(path))):
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            if _is_torch_load(call) and not _keyword_is_true(call, "weights_only"):
                unsafe.append(f"{where}: torch.load without weights_only=True")
            if any(k.arg == "trust_remote_code" for k in call.keywords) and not any(
                k.arg == "trust_remote_code"
                and isinstance(k.value, ast.Constant)
                and k.value.value is False
                for k in call.keywords
            ):
                unsafe.append(f"{where}: trust_remote_code not literally False")
            if any(k.arg is None for k in call.keywords) and _is_torch_load(call):
                unsafe.append(f"{where}: torch.load with **kwargs")
    assert unsafe == []
    assert any(
        _is_torch_load(c) for p in SRC.rglob("*.py") for c in _calls(ast.parse(p.read_text()))
    ), "the scan found no torch.load at all: it no longer matches how the code calls it"
