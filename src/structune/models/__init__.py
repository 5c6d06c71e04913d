"""Base models: built-in specs, GGUF conversion, and the shared chat template function."""

from structune.models.chat import render_chat
from structune.models.loading import BUILTIN_MODELS, DEFAULT_BASE_MODEL, load_model, resolve_model

__all__ = ["BUILTIN_MODELS", "DEFAULT_BASE_MODEL", "load_model", "render_chat", "resolve_model"]
