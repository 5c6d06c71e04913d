"""A local transformers model (optionally with a LoRA adapter) as an `LLM`.

Conversations are rendered and tokenized by `tokenize_chat`, the same function training
uses (message contents never yield control tokens), then decoded in batches: prompts are
sorted by length so each batch pads little, padded on the left, and decoded as `sampling`
says (greedy by default; a seed seeds the whole call). Under a grammar, the grammar's mask
comes after the repetition penalty and before temperature and top-p, which can only narrow
the tokens it allows. A base model plus adapter is merged once at load time, so decoding
costs what the base model costs. With a `json_schema`, every row decodes under its
own grammar matcher (`structune.constrain`); a list of schemas gives each row its own
grammar (extracted fields copy from the row's own source text). Each finished answer is then
checked against its full schema, and a violation decoded again with a seed
(`structune.constrain.checked.check_answers`): the one path for `Program.run` and the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from structune.constrain.checked import resampling
from structune.errors import BackendError, UserError
from structune.llms.base import LLM, SchemaPerRow, schemas_per_row
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message
from structune.models.chat import tokenize_chat
from structune.models.loading import DEFAULT_BASE_MODEL, load_model
from structune.models.precision import DType, fast_dtype

log = logging.getLogger(__name__)


class LocalLLM(LLM):
    """A loaded transformers causal LM and its tokenizer.

    Args:
        model: a transformers causal LM.
        tokenizer: its tokenizer, with a chat template.
        model_id: the name recorded with its answers.
        batch_size: how many conversations decode together in `complete_many`.
        default_system: the system message put first in a conversation that opens without
            one. `load` sets an adapter's training system prompt here, as an exported
            Modelfile's SYSTEM does for Ollama: a bare chat request (the server's, the
            `prompt` command's) then reaches the adapter as its training conversations
            did, not under the chat template's own default system message.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        batch_size: int = 16,
        default_system: str | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size
        self.default_system = default_system
        self.context_window = getattr(model.config, "max_position_embeddings", None)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

    @classmethod
    def load(
        cls,
        base: str = DEFAULT_BASE_MODEL,
        *,
        adapter: str | None = None,
        dtype: DType | None = None,
        batch_size: int = 16,
    ) -> LocalLLM:
        """Load a base model, merge an adapter (by id) into it, and cast to `dtype`.

        When an adapter is given, its manifest names the base model; a different `base` is
        refused.
        `dtype` defaults to bf16 where the hardware computes it natively, else fp32.
        """
        import torch

        model_id, default_system = base, None
        if adapter is not None:
            from structune.adapters import load_manifest

            manifest = load_manifest(adapter)
            if base not in (DEFAULT_BASE_MODEL, manifest.base_model):
                raise UserError(
                    f"adapter {adapter} was trained on {manifest.base_model}, not {base}; "
                    "an adapter only fits its own base model"
                )
            model, tokenizer = load_model(manifest.base_model, dtype="float32")
            model = _merge_adapter(model, str(manifest.path))
            model_id = f"{manifest.base_model}+{adapter}"
            default_system = manifest.system_prompt
        else:
            model, tokenizer = load_model(base, dtype="float32")
        model = model.to(getattr(torch, dtype or fast_dtype()))
        return cls(
            model,
            tokenizer,
            model_id=model_id,
            batch_size=batch_size,
            default_system=default_system,
        )

    def with_default_system(self, messages: Sequence[Message]) -> list[Message]:
        """`messages` as this model answers them: opened by `default_system` if they open
        without a system message."""
        if self.default_system is None or (messages and messages[0]["role"] == "system"):
            return list(messages)
        return [{"role": "system", "content": self.default_system}, *messages]

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        return self.complete_many(
            [messages], max_tokens=max_tokens, sampling=sampling, json_schema=json_schema
        )[0]

    def complete_many(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: SchemaPerRow = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """Answer `conversations` in length-sorted batches (see `LLM.complete_many`).

        `should_stop` is asked before every decode step; once it returns True, decoding ends
        there and `GenerationStopped` is raised (the server's way to drop a batch whose
        clients all left).
        """
        grammars = None
        schemas = schemas_per_row(json_schema, len(conversations))
        if any(s is not None for s in schemas):
            from structune.constrain.grammar import compile_schema

            if None in schemas:
                raise UserError("give every conversation a schema, or none of them")
            # refuses what it cannot enforce; one schema for all rows compiles once (cached)
            grammars = [compile_schema(s, self.tokenizer) for s in schemas if s is not None]

        prompts = [
            tokenize_chat(self.tokenizer, self.with_default_system(m), add_generation_prompt=True)
            for m in conversations
        ]

        def decode(rows: list[int], sampling: Sampling) -> list[Completion]:
            with self._seeded(sampling.seed):
                return self._decode_rows(
                    [prompts[i] for i in rows],
                    max_tokens,
                    sampling,
                    None if grammars is None else [grammars[i] for i in rows],
                    should_stop,
                )

        completions = decode(list(range(len(prompts))), sampling)
        if grammars is None:
            return completions
        from structune.constrain.checked import check_answers

        def resample(rows: list[int], attempt: int) -> list[Completion]:
            return decode(rows, resampling(sampling, attempt))

        return check_answers(completions, grammars, resample)

    def _decode_rows(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        sampling: Sampling,
        grammars: Any,
        should_stop: Callable[[], bool] | None,
    ) -> list[Completion]:
        """Decode `prompts` in length-sorted batches; the answers in the prompts' order."""
        from tqdm.auto import tqdm

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: dict[int, Completion] = {}
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(
            starts,
            desc=f"generating ({self.model_id})",
            unit="batch",
            disable=None if len(starts) > 1 else True,
        ):
            batch = order[start : start + self.batch_size]
            completions = self._generate(
                [prompts[i] for i in batch],
                max_tokens,
                sampling,
                None if grammars is None else [grammars[i] for i in batch],
                should_stop,
            )
            results.update(zip(batch, completions, strict=True))
        return [results[i] for i in range(len(prompts))]

    @contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        """Sample with `seed`, leaving the caller's random state as it was; None: as it is."""
        import torch

        if seed is None:
            yield
            return
        device = self.model.device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    def _generate(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        sampling: Sampling,
        grammars: Any,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        tok = self.tokenizer
        enc = tok.pad({"input_ids": prompts}, return_tensors="pt", padding=True)
        options = _generate_options(sampling)
        processors = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            from transformers import RepetitionPenaltyLogitsProcessor

            # here rather than as generate's flag, so that it comes before the grammar's mask
            processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        if grammars is not None:
            from structune.constrain.processor import BudgetClosing, GrammarLogitsProcessor

            processor = GrammarLogitsProcessor(
                grammars, closing=BudgetClosing.for_tokenizer(tok, max_tokens)
            )
            # generate runs ours after its own processors and before temperature and top-p,
            # which only rescale or drop tokens: nothing after the mask allows what it forbids
            processors.append(processor)
        if processors:
            options["logits_processor"] = processors
        if should_stop is not None:
            options["stopping_criteria"] = StoppingCriteriaList([_StopWhen(should_stop)])
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                **options,
            )
        if should_stop is not None and should_stop():
            raise GenerationStopped("decoding was stopped before the answers were complete")
        latency = time.perf_counter() - started
        generated = out[:, enc["input_ids"].shape[1] :].tolist()
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        completions = []
        for row, (tokens, prompt_tokens) in enumerate(zip(generated, prompt_lengths, strict=True)):
            finished = tok.eos_token_id in tokens
            if finished:
                tokens = tokens[: tokens.index(tok.eos_token_id) + 1]
            elif grammars is not None and tokens:
                finished = processor.accepts_after(row, tokens[-1])  # no step left for EOS
            completions.append(
                Completion(
                    text=tok.decode(tokens, skip_special_tokens=True).strip(),
                    finish_reason="stop" if finished else "length",
                    closed_early=finished
                    and grammars is not None
                    and row in processor.closed_early,
                    prompt_tokens=int(prompt_tokens),
                    completion_tokens=len(tokens),
                    latency_s=latency,
                )
            )
        return completions


def _generate_options(sampling: Sampling) -> dict[str, Any]:
    """`generate`'s flags for `sampling`. The model's own generation config never adds to
    them (Qwen2.5's asks for top-k 20 and a repetition penalty of 1.05): the repetition
    penalty is a processor of ours, and the flags left out are set to None."""
    options: dict[str, Any] = {"top_k": None, "repetition_penalty": None}
    if sampling.greedy:
        return {**options, "do_sample": False, "temperature": None, "top_p": None}
    return {
        **options,
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }


class GenerationStopped(BackendError):
    """`complete_many`'s `should_stop` said stop: there are no answers."""


class _StopWhen:
    """A transformers stopping criterion: every row stops once `should_stop()` is True."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool)


def _merge_adapter(model: Any, adapter_path: str) -> Any:
    from peft import PeftModel

    from structune.adapters import ADAPTER_WEIGHTS, peft_deprecations_hidden

    weights = Path(adapter_path) / ADAPTER_WEIGHTS
    if not weights.is_file():
        # PEFT would fall back to a pickled adapter_model.bin; structune writes safetensors only
        raise BackendError(
            f"adapter {adapter_path} has no {ADAPTER_WEIGHTS}; structune loads adapter weights "
            "only as safetensors (never pickled .bin files); train it again"
        )
    try:
        with peft_deprecations_hidden():
            peft_model = PeftModel.from_pretrained(model, adapter_path)
    except Exception as exc:  # peft/safetensors raise many types on corrupt files
        raise BackendError(
            f"cannot load the adapter in {adapter_path} (adapter_config.json, "
            f"{ADAPTER_WEIGHTS}): {type(exc).__name__}: {exc}. "
            "The adapter files are corrupt or truncated; train it again"
        ) from None
    return peft_model.merge_and_unload()
