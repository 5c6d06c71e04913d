"""Model specs as written on the command line → `LLM` objects.

- `openai:MODEL`: an OpenAI-compatible endpoint (`base_url` or `OPENAI_BASE_URL`, and
  `OPENAI_API_KEY`);
- `local:BASE` or `local:BASE+ADAPTER_ID`: a local transformers model, with an adapter;
- `llamacpp:BASE_OR_GGUF`: a built-in model's GGUF or a GGUF file, through llama.cpp;
- `ADAPTER_ID`: shorthand for the adapter on its own base model;
- a name the caller maps to a model of its own: the CLI passes the built-in tasks' offline
  teachers (`offline:albums`, `offline:citations`), which this layer does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from structune.errors import UserError
from structune.llms.base import LLM


def llm_from_spec(
    spec: str,
    *,
    base_url: str | None = None,
    named: Mapping[str, Callable[[], LLM]] | None = None,
) -> LLM:
    """The model `spec` names (see the module docstring); `base_url` is the API root of an
    `openai:` model; `named` maps further names to functions that build their models.
    Specs are checked before anything loads: an unknown name, a missing file or adapter,
    an unset API key fail at once."""
    named = named or {}
    if base_url is not None and not spec.startswith("openai:"):
        raise UserError(f"--base-url is for openai:MODEL specs, not {spec!r}")
    if spec in named:
        return named[spec]()
    if spec.startswith("openai:"):
        from structune.llms.openai_compat import OpenAICompatibleLLM

        return OpenAICompatibleLLM(spec.removeprefix("openai:"), base_url=base_url)
    if spec.startswith("llamacpp:"):
        from structune.llms.llama_cpp import LlamaCppLLM
        from structune.models.loading import BUILTIN_MODELS, builtin_gguf_path

        target = spec.removeprefix("llamacpp:")
        path = builtin_gguf_path(target) if target in BUILTIN_MODELS else target
        return LlamaCppLLM(path)
    from structune.llms.local import LocalLLM

    if spec.startswith("local:"):
        base, _, adapter = spec.removeprefix("local:").partition("+")
        if not adapter:
            from structune.models.loading import check_model_spec

            check_model_spec(base)
        return LocalLLM.load(base, adapter=adapter or None)
    from structune.models.loading import BUILTIN_MODELS

    if spec in BUILTIN_MODELS:
        return LocalLLM.load(spec)
    from structune.paths import adapters_dir

    if (adapters_dir() / spec).is_dir():
        return LocalLLM.load(adapter=spec)
    kinds = ["openai:MODEL", "local:BASE", "local:BASE+ADAPTER", "llamacpp:GGUF", *named]
    raise UserError(
        f"unknown model {spec!r}; use {', '.join(kinds)}, a built-in model "
        f"({', '.join(BUILTIN_MODELS)}) or an adapter id (`structune adapters`)"
    )
