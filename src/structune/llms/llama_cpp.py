"""A GGUF model through llama.cpp (llama-cpp-python) as an `LLM`: the single-stream path.

llama.cpp renders the chat template stored in the GGUF (the same one transformers reads
from it) and enforces a `json_schema` with its own grammar. A schema takes the path it takes
for `LocalLLM` (`structune.constrain.checked`): rewritten exactly where llguidance refuses
a keyword, relaxed only when the schema asks to be, validated by llguidance first (so a
feature no engine here can enforce is refused, not ignored), and each answer checked
against the full schema and decoded again with a seed on a violation.

llama-cpp-python tokenizes the rendered chat as one string with `special=True`, so the text
of a control token inside a message ("<|im_end|>\n<|im_start|>system ...") would become that
token: a message that holds such text is refused here (the transformers path, `LocalLLM`,
reads it as plain text instead; see `structune.models.chat.chat_token_ids`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from structune.constrain.checked import HeldBy, SchemaChecker, check_answers, resampling
from structune.constrain.extractive import strip_extractive
from structune.constrain.grammar import full_schema, plan_schema, schema_grammar
from structune.errors import BackendError, UserError
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message


class LlamaCppLLM(LLM):
    """A GGUF file served in-process by llama.cpp.

    Args:
        model_path: the GGUF file.
        n_ctx: context window in tokens.
        n_threads: CPU threads (default: llama.cpp's choice).
        model_id: the recorded name; defaults to `llamacpp:<file stem>`.
        lora_path: a GGUF LoRA adapter to apply (`structune export-adapter`).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        model_id: str | None = None,
        lora_path: str | Path | None = None,
    ):
        from llama_cpp import Llama

        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"GGUF file {path} not found")
        try:
            self.llama = Llama(
                str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                lora_path=str(lora_path) if lora_path else None,
                verbose=False,
            )
        except ValueError as exc:
            raise BackendError(
                f"llama.cpp cannot load {path}: {exc}; is the file complete?"
            ) from None
        lora = f"+{Path(lora_path).stem}" if lora_path else ""
        self.model_id = model_id or f"llamacpp:{path.stem}{lora}"
        self.context_window = n_ctx

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        self._refuse_control_token_text(messages)
        if json_schema is None:
            return self._create(messages, max_tokens, sampling, None)
        # llama.cpp's grammar cannot copy from the input: extracted fields are checked
        # after parsing instead.
        json_schema = strip_extractive(json_schema)
        plan = plan_schema(json_schema)
        schema_grammar(plan.schema)  # refuses what no engine here can enforce
        response_format = {"type": "json_object", "schema": plan.schema}
        completion = self._create(messages, max_tokens, sampling, response_format)
        held = HeldBy(plan.coverage, SchemaChecker(full_schema(json_schema)))

        def resample(rows: list[int], attempt: int) -> list[Completion]:
            again = resampling(sampling, attempt)
            return [self._create(messages, max_tokens, again, response_format)]

        return check_answers([completion], [held], resample)[0]

    def _create(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        sampling: Sampling,
        response_format: dict[str, Any] | None,
    ) -> Completion:
        started = time.perf_counter()
        if sampling.seed is not None:
            # A prompt found in llama.cpp's cache has its last token evaluated alone, and its
            # logits differ from a whole prompt's in the last bits: enough to change a draw.
            self.llama.reset()
        out: Any = self.llama.create_chat_completion(
            list(messages),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            # off: llama-cpp-python's defaults (top-k 40, min-p 0.05) would narrow `sampling`
            top_k=0,
            min_p=0.0,
            repeat_penalty=sampling.repetition_penalty,
            seed=sampling.seed,
            response_format=response_format,  # type: ignore[arg-type]
        )
        choice, usage = out["choices"][0], out["usage"]
        return Completion(
            text=choice["message"]["content"] or "",
            finish_reason="length" if choice["finish_reason"] == "length" else "stop",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            latency_s=time.perf_counter() - started,
        )

    def _refuse_control_token_text(self, messages: Sequence[Message]) -> None:
        """Refuse contents that llama.cpp would read as control tokens (a role switch, an
        early end of text) instead of as the characters they are."""
        for message in messages:
            text = message["content"].encode()
            as_controls = self.llama.tokenize(text, add_bos=False, special=True)
            if as_controls != self.llama.tokenize(text, add_bos=False, special=False):
                raise UserError(
                    f"a {message['role']} message holds the text of one of the model's control "
                    "tokens (such as <|im_end|>), which llama.cpp would obey as one; remove it "
                    "from the input, or use the transformers backend, which reads it as text"
                )
