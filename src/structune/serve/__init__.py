"""Serving: an OpenAI-compatible HTTP server over base models and adapters."""
