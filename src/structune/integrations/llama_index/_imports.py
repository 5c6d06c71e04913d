"""The install hint for the optional LlamaIndex extra."""

from __future__ import annotations

from importlib.util import find_spec


def require_llama_index() -> None:
    if find_spec("llama_index.core") is None:
        raise ImportError(
            "structune's LlamaIndex integration needs the llama-index extra: "
            "pip install 'structune[llama-index]'"
        )
