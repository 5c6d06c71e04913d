"""A structune model as a LlamaIndex LLM: usable wherever LlamaIndex takes `llm=`.

It wraps a structune `LLM` backend: the bundled base model, a base model plus a tuned
adapter, a GGUF through llama.cpp, an OpenAI-compatible endpoint, or a plain Python
callable (the offline teacher). The backend loads on first use, so building the object
costs nothing.

Chat messages are passed through as messages: the backend applies the model's chat
template (the same function training uses), so a model tuned on recorded LlamaIndex calls
sees at inference exactly the prompt layout it was trained on. A completion call is one user
message.

`constrained=True` holds every structured answer (`structured_predict`, which query engines
with `output_cls=` call) to the output class's JSON Schema with grammar-constrained decoding.
A `LLMTextCompletionProgram` can ask for the same per call with
`program(llm_kwargs={"json_schema": Album.model_json_schema()}, ...)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, PrivateAttr

from structune.integrations.llama_index._imports import require_llama_index
from structune.llms.base import LLM
from structune.llms.sampling import MAX_SEED, MAX_TEMPERATURE, Sampling
from structune.messages import Completion, Message
from structune.models.loading import DEFAULT_BASE_MODEL

require_llama_index()

from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW  # noqa: E402
from llama_index.core.llms.callbacks import (  # noqa: E402
    llm_chat_callback,
    llm_completion_callback,
)
from llama_index.core.llms.custom import CustomLLM  # noqa: E402


class StructuneLLM(CustomLLM):
    """A structune model behind LlamaIndex's LLM interface.

    Args:
        model: a base model spec as `structune` takes it (`smollm2-135m`, a local folder,
            `llamacpp:FILE.gguf`, `openai:MODEL`, or an adapter id).
        adapter: a tuned adapter id, merged into `model` (`GradientModelAdapterLLM`'s role).
        backend: an already built structune `LLM` (e.g. the offline teacher); wins over
            `model` and `adapter`.
        max_tokens: the most tokens one answer may take.
        temperature, top_p, seed, repetition_penalty: how tokens are picked
            (`structune.Sampling`); greedy by default.
        is_chat_model: LlamaIndex sends chat messages (True) or one formatted prompt.
        constrained: hold structured answers to their schema while decoding.
        context_window: override the backend's context window.
    """

    model: str = Field(default=DEFAULT_BASE_MODEL, description="base model spec")
    adapter: str | None = Field(default=None, description="tuned adapter id")
    max_tokens: int = Field(default=512, gt=0, description="most tokens in one answer")
    temperature: float = Field(default=0.0, ge=0.0, le=MAX_TEMPERATURE, description="0: greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    repetition_penalty: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    is_chat_model: bool = Field(default=True)
    constrained: bool = Field(default=False, description="grammar-constrain structured answers")
    context_window: int | None = Field(default=None, gt=0)
    _backend: LLM | None = PrivateAttr(default=None)

    def __init__(self, *, backend: LLM | None = None, **kwargs: Any) -> None:
        if backend is not None:
            kwargs.setdefault("model", backend.model_id)
        super().__init__(**kwargs)
        self._backend = backend

    @classmethod
    def class_name(cls) -> str:
        return "structune_llm"

    @property
    def backend(self) -> LLM:
        """The structune model, loaded on first use."""
        if self._backend is None:
            if self.adapter is not None:
                from structune.llms.local import LocalLLM

                self._backend = LocalLLM.load(self.model, adapter=self.adapter)
            else:
                from structune.llms.spec import llm_from_spec
                from structune.tasks import OFFLINE_TEACHERS

                self._backend = llm_from_spec(self.model, named=OFFLINE_TEACHERS)
        return self._backend

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window
            or self.backend.context_window
            or DEFAULT_CONTEXT_WINDOW,
            num_output=self.max_tokens,
            is_chat_model=self.is_chat_model,
            is_function_calling_model=False,
            model_name=self.backend.model_id,
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        completion = self._complete([_to_message(m) for m in messages], **kwargs)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=completion.text),
            raw=_raw(completion),
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        # Local decoding is batched, not streamed: the answer arrives as one chunk.
        response = self.chat(messages, **kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        completion = self._complete([{"role": "user", "content": prompt}], **kwargs)
        return CompletionResponse(text=completion.text, raw=_raw(completion))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()

    def structured_predict(
        self,
        output_cls: Any,
        prompt: Any,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Any:
        return super().structured_predict(
            output_cls,
            prompt,
            llm_kwargs=self._schema_kwargs(output_cls, llm_kwargs),
            **prompt_args,
        )

    async def astructured_predict(
        self,
        output_cls: Any,
        prompt: Any,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Any:
        return await super().astructured_predict(
            output_cls,
            prompt,
            llm_kwargs=self._schema_kwargs(output_cls, llm_kwargs),
            **prompt_args,
        )

    def _schema_kwargs(self, output_cls: Any, llm_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        llm_kwargs = dict(llm_kwargs or {})
        if self.constrained:
            llm_kwargs.setdefault("json_schema", output_cls.model_json_schema())
        return llm_kwargs

    def _complete(
        self, messages: list[Message], *, json_schema: dict[str, Any] | None = None, **_: Any
    ) -> Completion:
        return self.backend.complete(
            messages,
            max_tokens=self.max_tokens,
            sampling=Sampling(
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self.seed,
                repetition_penalty=self.repetition_penalty,
            ),
            json_schema=json_schema,
        )


def _to_message(message: ChatMessage) -> Message:
    return {"role": message.role.value, "content": message.content or ""}


def _raw(completion: Completion) -> dict[str, Any]:
    return {
        "finish_reason": completion.finish_reason,
        "closed_early": completion.closed_early,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_s": completion.latency_s,
    }
