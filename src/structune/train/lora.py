"""LoRA supervised fine-tuning of a base model on chat conversations.

A short loop written out rather than transformers' `Trainer`: measured here, `Trainer`
with default padding spends over half its time on padding and per-step overhead
(~111 tokens/s against ~226 raw forward+backward), while this loop pads each batch only to
its longest example. Under CPU bf16 autocast the frozen base weights stay fp32 and LoRA
matrices train in fp32 with AdamW; `peft` provides the LoRA layers and the saved format.

Continuing an adapter (`parent=`) loads its weights as trainable and writes a new
adapter whose manifest names the parent: the notebook's second `finetune()` call.

A run checkpoints every `config.checkpoint_every` steps (see `checkpoints`); `resume=True`
continues from the newest complete checkpoint and ends with the adapter an uninterrupted
run would have saved. A NaN or infinite loss or weight stops the run at that step, before
anything non-finite can be saved.

Started by `torchrun --nproc-per-node N` (or `accelerate launch`), the same call trains
data-parallel (`structune.train.distributed`) with PyTorch's DistributedDataParallel:
every rank draws the same global batches and computes its share of each, the gradients are
averaged, and the result is the adapter one process would have trained on the same global
batches. Rank 0 alone chooses the checkpoint to resume from and writes checkpoints, the
adapter, logs and progress. Where CUDA is available each process trains on its own GPU
(NCCL); otherwise on the CPU (gloo), where torchrun gives each process one thread unless
OMP_NUM_THREADS says more.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from structune.adapters import (
    AdapterManifest,
    load_manifest,
    non_finite_weights,
    peft_deprecations_hidden,
    save_adapter,
)
from structune.errors import UserError
from structune.messages import Message
from structune.models.loading import DEFAULT_BASE_MODEL, load_model
from structune.models.precision import fast_dtype
from structune.train.checkpoints import (
    RunCheckpoints,
    TrainState,
    load_checkpoint,
    restore,
    run_key,
)
from structune.train.config import TrainConfig
from structune.train.data import (
    IGNORE_INDEX,
    ExampleTokenizer,
    TokenizedExample,
    collate,
    dataset_hash,
    examples_hash,
    tokenize_conversation,
    training_batches,
)
from structune.train.distributed import Ranks, data_parallel

log = logging.getLogger(__name__)


def learning_rate_at(step: int, *, total: int, peak: float, warmup_ratio: float) -> float:
    """Linear warm-up to `peak`, then linear decay to zero at `total`."""
    warmup = max(1, round(total * warmup_ratio))
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def finetune(
    conversations: Sequence[Sequence[Message]],
    *,
    base: str = DEFAULT_BASE_MODEL,
    config: TrainConfig | None = None,
    parent: str | None = None,
    task: str | None = None,
    name: str | None = None,
    progress: bool = True,
    resume: bool = False,
    tokenize: ExampleTokenizer = tokenize_conversation,
) -> AdapterManifest:
    """Train a LoRA adapter on `conversations` and save it.

    Under torchrun every rank makes this same call; each returns the saved adapter's
    manifest once rank 0 has written it.

    Args:
        conversations: chat conversations, each ending with the assistant answer to learn.
        base: the base model spec; ignored when `parent` is given (the parent's base is used).
        config: training settings; `batch_size` is the global batch, split between ranks.
        parent: an adapter id to continue training from.
        task: the program the examples answer, recorded in the manifest: evaluation refuses
            to score the adapter against another program's schema. None when unknown.
        name: the adapter id's prefix (default: the task).
        progress: show a progress bar with the running loss; where stderr is no terminal,
            log (INFO) a line each twentieth of the steps instead.
        resume: continue from the newest complete checkpoint of this same run (same base,
            parent, data and config), if there is one.
        tokenize: how a conversation becomes token ids, labels and loss weights: the hook
            for experiments that cut or weigh answer tokens otherwise. The examples it makes,
            not its name, identify the run's checkpoints; the manifest does not record it.

    Returns:
        The manifest of the new adapter; load it with `LocalLLM.load(adapter=manifest.id)`.
    """
    config = config or TrainConfig()
    config.validate()
    if config.bf16 is None:
        config = replace(config, bf16=fast_dtype() == "bfloat16")
    if not conversations:
        raise UserError(
            "no training examples: the dataset holds no valid examples for this task; "
            "record or import some first (`structune record`, `structune import`)"
        )
    parent_manifest = load_manifest(parent) if parent else None
    if parent_manifest is not None:
        base = parent_manifest.base_model
        # the parent's LoRA shape is what trains on: record it, not this call's defaults
        shape = {k: parent_manifest.config[k] for k in ("lora_r", "lora_alpha", "lora_dropout")}
        config = replace(config, **shape)

    import torch

    ranks = data_parallel()
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(base, dtype="float32")
    examples = [tokenize(tokenizer, c, max_length=config.max_length) for c in conversations]
    model = with_lora(model, config, parent_manifest).to(ranks.device)
    if config.gradient_checkpointing:
        _recompute_activations(model)
    total = config.total_steps(len(examples))
    data = dataset_hash(conversations)
    key = run_key(base=base, parent=parent, dataset_hash=examples_hash(examples), config=config)
    run = RunCheckpoints(key)
    # rank 0 alone looks, as looking removes what a crash left behind
    start = ranks.broadcast(
        _starting_point(run, resume=resume, total=total) if ranks.is_main else None
    )
    state = _train_loop(model, tokenizer, examples, config, total, progress, run, start, ranks)

    manifest = AdapterManifest(
        id=ranks.broadcast(_new_adapter_id(name or task)),
        base_model=base,
        parent=parent,
        task=task,
        dataset_hash=data,
        dataset_size=len(conversations),
        config=asdict(config),
        loss_history=state.losses,
        steps=total,
        tokens_trained=state.tokens,
        train_seconds=round(state.seconds, 3),
        versions={p: version(p) for p in ("structune", "torch", "transformers", "peft")},
        system_prompt=_shared_system_prompt(conversations),
    )
    if ranks.is_main:
        save_adapter(model, manifest)
        run.discard()
        log.info(
            "saved adapter %s (%d steps, final loss %.4f)", manifest.id, total, state.losses[-1]
        )
    ranks.barrier()  # no rank returns an adapter that is not on disk yet
    return manifest


def _new_adapter_id(name: str | None) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name or 'adapter')}-{secrets.token_hex(4)}"


def _starting_point(run: RunCheckpoints, *, resume: bool, total: int) -> Path | None:
    """The checkpoint to continue from, saying in the log what happens to the ones found."""
    latest = run.latest()
    if latest is None:
        if resume:
            log.info("no checkpoint of this run in %s; starting from step 0", run.path)
        return None
    if not resume:
        log.warning(
            "this run has a checkpoint at %s of %d steps (%s); starting over from step 0. "
            "Pass resume=True (`structune train --resume`) to continue from it",
            latest.name,
            total,
            latest,
        )
        return None
    log.info("resuming from %s of %d steps (%s)", latest.name, total, latest)
    return latest


def _recompute_activations(peft_model: Any) -> None:
    """Turn on transformers' activation (gradient) checkpointing of each decoder layer."""
    causal_lm = peft_model.get_base_model()
    # non-reentrant: works with frozen inputs (only LoRA weights need grad) and with DDP
    kwargs = {"use_reentrant": False}
    if hasattr(causal_lm, "activation_checkpointing_enable"):  # newer name; the old deprecated
        causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def with_lora(model: Any, config: TrainConfig, parent: AdapterManifest | None = None) -> Any:
    """`model` wrapped in peft LoRA layers on all linear layers, shaped by `config`, with
    only them trainable; with `parent`, that adapter's weights loaded as trainable instead.
    Turns the model's KV cache off: training never reads it."""
    from peft import LoraConfig, PeftModel, get_peft_model

    model.config.use_cache = False
    with peft_deprecations_hidden():
        if parent is not None:
            return PeftModel.from_pretrained(model, str(parent.path), is_trainable=True)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)


def answer_loss(
    model: Any,
    batch: dict[str, Any],
    *,
    reduction: Literal["mean", "sum"] = "mean",
    unlikelihood: float = 0.0,
    words: Any = None,
) -> Any:
    """Next-token cross-entropy over the answer tokens only: their mean, or their sum,
    each token's loss times its weight where the batch carries `weights` (`collate`).
    With `unlikelihood` > 0 each token's loss adds that times its unlikelihood term
    against repeating the answer's earlier `words` (`repetition_unlikelihood`).

    The vocabulary projection is applied only at answer positions: with a 49k-token
    vocabulary it is a fifth of the model's FLOPs, and most positions are prompt.

    `batch` is right-padded (`collate`), so the attention mask is left out: a real token
    attends only to earlier positions, all of them real, and without a mask the attention
    kernel runs causal and skips the blocks above the diagonal (measured here: a step of
    four ~1,000-token examples 22.6 s instead of 24.8 s, the same loss).
    """
    import torch.nn.functional as F

    causal_lm = model.get_base_model()
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"]
    ).last_hidden_state  # (batch, length, hidden)
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE_INDEX  # (batch, length - 1)
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])  # (answer tokens, vocab)
    if "weights" not in batch and not unlikelihood:
        return F.cross_entropy(logits.float(), targets[keep], reduction=reduction)
    losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    if unlikelihood:
        answers = targets[keep].split(keep.sum(dim=1).tolist())
        losses = losses + unlikelihood * repetition_unlikelihood(logits.float(), answers, words)
    if "weights" in batch:
        losses = losses * batch["weights"][:, 1:][keep]
    return losses.sum() if reduction == "sum" else losses.mean()


def repetition_unlikelihood(logits: Any, answers: Sequence[Any], words: Any) -> Any:
    """Per answer token, the token-level unlikelihood term of Welleck et al. (2019,
    "Neural Text Generation with Unlikelihood Training"): -sum log(1 - p(c)) over the
    candidates c, the distinct word tokens earlier in the same answer other than the target.

    Cross-entropy alone teaches a small student that copying the previous song's title is
    the likeliest next title (its greedy answers repeat one title four times); this term
    pushes down exactly those copies. Only `words` (a bool per vocabulary id,
    `word_tokens`) are candidates: digits and punctuation repeat rightly (two songs may
    both last 240 seconds; every object opens with the same quote), and pushing them
    down was measured to cut numbers short (`"length_seconds":26`).

    `logits` is (answer tokens, vocab), the answers' tokens laid end to end; `answers`
    holds each answer's target tokens, in that order.
    """
    import torch

    words = words.to(logits.device)
    terms = []
    offset = 0
    for answer in answers:
        n = len(answer)
        log_p = logits[offset : offset + n].log_softmax(dim=-1)  # (n, vocab)
        offset += n
        seen_before = torch.ones(n, n, dtype=torch.bool, device=logits.device).tril(-1)
        same = answer[:, None] == answer[None, :]  # (n, n): token j equals token i
        first = ~(same & seen_before).any(dim=1)  # token j occurs here for the first time
        # (position i, earlier token j)
        candidate = seen_before & ~same & (first & words[answer])[None, :]
        p = log_p.gather(1, answer[None, :].expand(n, n)).exp()  # p(token j at position i)
        terms.append(-(torch.log1p(-p.clamp(max=1 - 1e-5)) * candidate).sum(dim=1))
    return torch.cat(terms)


def word_tokens(tokenizer: Any) -> Any:
    """A bool per vocabulary id: does the token spell a letter (`repetition_unlikelihood`)."""
    import torch

    # decoded, not the raw pieces: a byte-level BPE spells the space as a letter ("Ġ")
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor([any(c.isalpha() for c in piece) for piece in pieces])


def answer_token_count(example: TokenizedExample) -> int:
    """How many tokens of `example` carry loss (the first token is never predicted)."""
    return sum(label != IGNORE_INDEX for label in example.labels[1:])


def _summed_answer_loss(
    model: Any, ranks: Ranks, unlikelihood: float = 0.0, words: Any = None
) -> Any:
    """A module whose forward is `model`'s summed answer loss, wrapped in
    DistributedDataParallel when there are several ranks.

    DDP averages gradients only for what runs through its own forward, and the answer
    loss goes around the model's forward (see `answer_loss`): hence a module of its own.
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class SummedAnswerLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: dict[str, Any]) -> Any:
            return answer_loss(
                self.model, batch, reduction="sum", unlikelihood=unlikelihood, words=words
            )

    if ranks.world_size == 1:
        return SummedAnswerLoss()
    return DistributedDataParallel(
        SummedAnswerLoss(),
        device_ids=None if ranks.device == "cpu" else [ranks.device],
        forward_sync_buffers=False,  # the only buffers, rotary frequencies, never change
    )


def _train_loop(
    model: Any,
    tokenizer: Any,
    examples: list[TokenizedExample],
    config: TrainConfig,
    total: int,
    progress: bool,
    run: RunCheckpoints,
    start: Path | None,
    ranks: Ranks,
) -> TrainState:
    """Run optimizer steps up to `total`, from step 0 or from checkpoint `start`."""
    import torch
    from tqdm.auto import tqdm

    trainable = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel over all LoRA tensors instead of a loop over ~400 small ones
    # (measured here: 9 ms a step against 52 ms)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0, fused=True)
    state = restore(load_checkpoint(start), model, optimizer) if start else TrainState()
    # after restore: DDP starts from rank 0's weights
    words = word_tokens(tokenizer) if config.unlikelihood else None
    loss_of = _summed_answer_loss(model, ranks, config.unlikelihood, words)
    tokens_per_batch = config.batch_size * sum(map(answer_token_count, examples)) / len(examples)
    batches = training_batches(
        examples,
        batch_size=config.batch_size,
        seed=config.seed,
        group_by_length=config.group_by_length,
    )
    batches = itertools.islice(batches, state.step, None)  # the data order resumes too
    model.train()
    started = time.perf_counter() - state.seconds
    bar = tqdm(
        range(state.step, total),
        initial=state.step,
        total=total,
        desc="training",
        unit="step",
        disable=None if progress and ranks.is_main else True,
    )
    # tqdm hides its bar where stderr is no terminal (a log file under nohup); an hour's
    # run then logs a line each twentieth of its steps instead, so its progress shows.
    log_every = max(1, total // 20) if progress and ranks.is_main and bar.disable else 0
    first_step, first_seconds = state.step, state.seconds
    for step in bar:
        batch = next(batches)
        lr = learning_rate_at(
            step, total=total, peak=config.learning_rate, warmup_ratio=config.warmup_ratio
        )
        loss = _train_step(
            loss_of,
            optimizer,
            batch,
            ranks,
            lr=lr,
            tokens_per_batch=tokens_per_batch,
            max_grad_norm=config.max_grad_norm,
            bf16=bool(config.bf16),
            pad=tokenizer.pad_token_id,
        )
        _stop_unless_finite(model, loss, step=step + 1, total=total)
        state.step = step + 1
        state.losses.append(round(loss.item(), 5))
        state.tokens += sum(len(e.input_ids) for e in batch)
        state.seconds = time.perf_counter() - started
        bar.set_postfix(loss=f"{state.losses[-1]:.3f}")
        if log_every and (state.step % log_every == 0 or state.step == total):
            _log_progress(state, total, since=(first_step, first_seconds), window=log_every)
        if (
            ranks.is_main
            and config.checkpoint_every
            and state.step % config.checkpoint_every == 0
            and state.step < total
        ):
            run.save(model, optimizer, state)
    model.eval()
    return state


def _log_progress(state: TrainState, total: int, *, since: tuple[int, float], window: int) -> None:
    """Log the step, the mean loss of the last `window` steps, and the time left.

    The time left is extrapolated from this process's own steps (`since`: the step and
    seconds it started from), not from a resumed run's earlier ones.
    """
    steps, seconds = state.step - since[0], state.seconds - since[1]
    left = (total - state.step) * seconds / steps
    recent = state.losses[-window:]
    log.info(
        "training step %d/%d, loss %.3f, %.1f min so far, about %.1f min left",
        state.step,
        total,
        sum(recent) / len(recent),
        state.seconds / 60,
        left / 60,
    )


def _train_step(
    loss_of: Any,
    optimizer: Any,
    batch: list[TokenizedExample],
    ranks: Ranks,
    *,
    lr: float,
    tokens_per_batch: float,
    max_grad_norm: float | None,
    bf16: bool,
    pad: int,
) -> Any:
    """One optimizer step on a global batch, of which this rank computes its share.

    The gradient is that of the batch's summed answer loss over `tokens_per_batch`, the
    dataset's mean answer tokens per batch, not over this batch's own count: so every answer
    token weighs the same in every step. Grouped by length, batches hold only short answers
    (an empty list) or only long ones; divided by its own count, a batch of four short
    answers moved the weights as far as one of four long ones, and the long answers' tokens
    counted for less (measured on the long-answer set of `benchmarks/trainer_vs_hf.py`, grouped:
    final answer loss 0.156, against 0.122 for transformers' Trainer on random batches).

    Returns the batch's mean answer loss, the same on every rank; if it is not finite,
    every rank leaves the weights as they were.
    """
    import torch
    import torch.distributed as dist

    for group in optimizer.param_groups:
        group["lr"] = lr
    share = ranks.share(batch)
    # A rank left without an example (a short last batch) still runs one, weighted 0:
    # every rank must join each step's gradient all-reduce.
    inputs = collate(share or batch[:1], pad_token_id=pad)
    inputs = {name: tensor.to(ranks.device) for name, tensor in inputs.items()}
    device_type = torch.device(ranks.device).type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        summed = loss_of(inputs)  # this share's answer-token losses, summed
    # the batch's mean answer loss, this rank's part of it (reported, and checked for NaN)
    batch_tokens = sum(map(answer_token_count, batch))
    loss = summed.detach() / batch_tokens if share else torch.zeros_like(summed.detach())
    if ranks.world_size > 1:
        dist.all_reduce(loss)  # the batch's mean loss, so that all ranks stop together
    if torch.isfinite(loss):
        # DDP averages gradients over the ranks: weighted so, the average is the gradient of
        # the global batch's summed loss over tokens_per_batch, as one process computes it.
        weight = ranks.world_size / tokens_per_batch if share else 0.0
        (summed * weight).backward()  # under DDP, every rank then holds the same gradients
        if max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def _stop_unless_finite(model: Any, loss: Any, *, step: int, total: int) -> None:
    """Stop the run at the step where the loss or a weight stops being a finite number."""
    import torch

    if torch.isfinite(loss):
        bad = non_finite_weights(model)
        if not bad:
            return
        problem = f"{len(bad)} weights became NaN or infinite (first: {bad[0]})"
    else:
        problem = f"the loss is {loss.item()}"
    raise UserError(
        f"training stopped at step {step} of {total}: {problem}; no adapter was saved. "
        "Lower the learning rate or check the data"
    )


def _shared_system_prompt(conversations: Sequence[Sequence[Message]]) -> str | None:
    """The system message all `conversations` open with, if they share one."""
    prompts = {c[0]["content"] if c and c[0]["role"] == "system" else None for c in conversations}
    return prompts.pop() if len(prompts) == 1 else None
