"""Training and adapters: `train`, `adapters`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from structune.cli import args as flags
from structune.errors import UserError


def add_commands(command: Any) -> None:
    train = command("train", _train, "LoRA fine-tune a base model on recorded examples")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="train on this task's valid examples in the dataset")
    source.add_argument("--jsonl", type=Path, help="train on a JSONL file instead")
    train.add_argument(
        "--program",
        help="with --jsonl: the program its answers follow (album, citations or "
        "package.module:attribute); answers that do not validate are left out, and the "
        "adapter records the program so that `structune eval` can check it fits",
    )
    train.add_argument("--parent", help="continue training this adapter id")
    flags.db_flag(train)
    train_flags(train)
    _checkpoint_flags(train)

    adapters = command("adapters", _adapters, "list trained adapters")
    adapters.add_argument("--json", action="store_true", help="print the list as JSON")
    actions = adapters.add_subparsers(metavar="ACTION")
    rm = actions.add_parser("rm", help="delete a trained adapter")
    rm.add_argument("adapter", help="the adapter id (`structune adapters` lists them)")
    rm.set_defaults(handler=_adapters_rm)


def train_flags(parser: argparse.ArgumentParser, *, recipe: str | None = None) -> None:
    """The training hyper-parameters, shared by `train` and `demo`. With `recipe` (the
    name of a task's `TrainConfig`), a flag left out takes that recipe's value, read only
    when the command runs (`train_config`), so `--help` imports no task."""
    from structune.train.config import TrainConfig

    defaults: Any = TrainConfig()
    if recipe is not None:
        parser.epilog = f"Training flags left out take the values of {recipe}."
        # argparse.SUPPRESS as every default: a flag left out sets no attribute
        defaults = SimpleNamespace(**dict.fromkeys(vars(defaults), argparse.SUPPRESS))
    parser.add_argument(
        "--base", default="smollm2-135m", help="base model spec (`structune models` lists them)"
    )
    parser.add_argument(
        "--epochs", type=flags.positive_number, default=defaults.epochs, help="passes over the data"
    )
    parser.add_argument(
        "--max-steps",
        type=flags.positive,
        default=defaults.max_steps,
        help="stop after this many steps (wins over epochs)",
    )
    parser.add_argument(
        "--batch-size", type=flags.positive, default=defaults.batch_size, help="examples per step"
    )
    parser.add_argument(
        "--learning-rate",
        type=flags.positive_number,
        default=defaults.learning_rate,
        help="peak learning rate (AdamW, warm-up then linear decay to zero)",
    )
    parser.add_argument(
        "--lora-r", type=flags.positive, default=defaults.lora_r, help="the adapter's rank"
    )
    parser.add_argument(
        "--lora-dropout",
        type=flags.fraction,
        default=defaults.lora_dropout,
        help="dropout on the adapter's input during training, in [0, 1); a run continued "
        "from --parent keeps the parent's, as it keeps its rank",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=defaults.gradient_checkpointing,
        help="recompute activations in the backward pass: less memory, slower steps",
    )
    parser.add_argument(
        "--group-by-length",
        action="store_true",
        default=defaults.group_by_length,
        help="batch examples of similar length: faster steps, a higher loss on small datasets",
    )
    parser.add_argument(
        "--unlikelihood",
        type=flags.non_negative_number,
        default=defaults.unlikelihood,
        metavar="WEIGHT",
        help="weight of a loss against repeating the answer's earlier words (0: off), for "
        "answers whose list items must differ (Welleck et al., 2019)",
    )


def _checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    from structune.train.config import TrainConfig

    parser.add_argument(
        "--checkpoint-every",
        type=flags.non_negative,
        default=TrainConfig.checkpoint_every,
        metavar="STEPS",
        help="save a checkpoint every STEPS steps (0: never)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the same run (same data and flags) from its newest checkpoint",
    )


def train_config(args: argparse.Namespace, recipe: Any = None) -> Any:
    """The `TrainConfig` of the flags given, over `recipe` (a `TrainConfig`) where the
    parser took one (`train_flags(recipe=...)`) and left out flags set nothing."""
    from dataclasses import replace

    from structune.train.config import TrainConfig

    given = {
        name: getattr(args, name)
        for name in (
            "epochs",
            "max_steps",
            "batch_size",
            "learning_rate",
            "lora_r",
            "lora_dropout",
            "gradient_checkpointing",
            "group_by_length",
            "unlikelihood",
        )
        if hasattr(args, name)
    }
    if "lora_r" in given:
        given["lora_alpha"] = 2 * given["lora_r"]
    return replace(recipe or TrainConfig(), **given)


def _train(args: argparse.Namespace) -> None:
    import os
    from dataclasses import replace

    from structune.models.loading import check_model_spec
    from structune.train.lora import finetune
    from structune.train.sources import conversations_from_jsonl, conversations_from_store

    if args.program and not args.jsonl:
        raise UserError("--program goes with --jsonl; a task in the dataset names its program")
    config = replace(train_config(args), checkpoint_every=args.checkpoint_every)
    config.validate()
    if args.parent is not None:
        from structune.adapters import load_manifest

        load_manifest(args.parent)  # a typo fails now, not after the data is read
    else:
        check_model_spec(args.base)
    if args.jsonl:
        from structune.tasks import load_program

        program = load_program(args.program) if args.program else None
        conversations = conversations_from_jsonl(args.jsonl, program)
        # unknown without --program: recorded as None, so eval warns instead of refusing
        task, name = (program.name if program else None), args.jsonl.stem
    else:
        with flags.open_store(args, create=False) as store:
            conversations, task = conversations_from_store(store, args.task), args.task
        name = task
    m = finetune(
        conversations,
        base=args.base,
        config=config,
        parent=args.parent,
        task=task,
        name=name,
        resume=args.resume,
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report, from rank 0
        print(
            f"adapter {m.id}: {m.dataset_size} examples, {m.steps} steps, "
            f"final loss {m.loss_history[-1]:.4f}, saved in {m.path}"
        )


def _adapters(args: argparse.Namespace) -> None:
    from structune.adapters import list_adapters

    manifests = list_adapters()
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in manifests]))
        return
    for m in manifests:
        loss = f"{m.loss_history[-1]:.4f}" if m.loss_history else "-"
        parent = f" parent={m.parent}" if m.parent else ""
        print(
            f"{m.id:<24} base={m.base_model} task={m.task} examples={m.dataset_size} "
            f"steps={m.steps} loss={loss} created={m.created[:19]}{parent}"
        )


def _adapters_rm(args: argparse.Namespace) -> None:
    from structune.adapters import remove_adapter

    print(f"removed adapter {args.adapter} ({remove_adapter(args.adapter)})")
