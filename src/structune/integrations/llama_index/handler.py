"""Record every LLM call made through LlamaIndex as a fine-tuning example.

The role of the notebook's `GradientAIFineTuningHandler` (and `OpenAIFineTuningHandler`):
attach it to a `CallbackManager`, run a teacher (any LlamaIndex LLM) through programs or
query engines, then `save_finetuning_events(path)`. Unlike the Gradient handler, which
flattened each call into one prompt string, it keeps the chat messages: structune applies
the student's chat template at training time exactly as at inference time.

The file is OpenAI chat JSONL (`{"messages": [...]}` per line), UTF-8 rather than
`\\uXXXX`-escaped so training targets read as the grammar writes JSON, and it is written
to a temporary file and renamed into place. Calls that raised are counted, not recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from structune.errors import UserError
from structune.fileio import write_atomically
from structune.integrations.llama_index._imports import require_llama_index

require_llama_index()

from llama_index.core.base.llms.types import ChatMessage, MessageRole  # noqa: E402
from llama_index.core.callbacks.base_handler import BaseCallbackHandler  # noqa: E402
from llama_index.core.callbacks.schema import CBEventType, EventPayload  # noqa: E402


class StructuneFinetuningHandler(BaseCallbackHandler):
    """Collects the messages sent to each LLM call and the answer it returned."""

    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self._prompts: dict[str, list[ChatMessage]] = {}
        self._answers: dict[str, ChatMessage] = {}
        self.failed_calls = 0

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type == CBEventType.LLM and payload:
            if EventPayload.MESSAGES in payload:
                self._prompts[event_id] = list(payload[EventPayload.MESSAGES])
            elif EventPayload.PROMPT in payload:
                prompt = str(payload[EventPayload.PROMPT])
                self._prompts[event_id] = [ChatMessage(role=MessageRole.USER, content=prompt)]
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        if event_type != CBEventType.LLM or event_id not in self._prompts or not payload:
            return
        if EventPayload.EXCEPTION in payload:
            self.failed_calls += 1
            del self._prompts[event_id]
        elif EventPayload.RESPONSE in payload:  # a chat call: a ChatResponse
            self._answers[event_id] = payload[EventPayload.RESPONSE].message
        elif EventPayload.COMPLETION in payload:  # a completion call: a CompletionResponse
            text = payload[EventPayload.COMPLETION].text
            self._answers[event_id] = ChatMessage(role=MessageRole.ASSISTANT, content=text)

    def get_finetuning_events(self) -> dict[str, dict[str, Any]]:
        """The finished calls: `{event_id: {"messages": [...], "response": ChatMessage}}`."""
        return {
            event_id: {"messages": self._prompts[event_id], "response": answer}
            for event_id, answer in self._answers.items()
        }

    def save_finetuning_events(self, path: str | Path) -> int:
        """Write the finished calls to `path` as OpenAI chat JSONL; return how many.

        Raises:
            UserError: no call finished, with the likely reason (an empty file would only
                fail later, at training time).
        """
        events = self.get_finetuning_events()
        if not events:
            raise UserError(self._why_empty())
        lines = [
            json.dumps(
                {"messages": [_to_dict(m) for m in [*e["messages"], e["response"]]]},
                ensure_ascii=False,
            )
            for e in events.values()
        ]
        write_atomically(path, "".join(line + "\n" for line in lines))
        # The upstream handlers' contract, which the notebook shows as a cell output.
        print(f"Wrote {len(lines)} examples to {path}")
        return len(lines)

    def start_trace(self, trace_id: str | None = None) -> None:
        """Traces carry nothing this handler needs."""

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        """Traces carry nothing this handler needs."""

    def _why_empty(self) -> str:
        if self.failed_calls:
            return (
                f"no LLM call finished: all {self.failed_calls} recorded calls raised an error; "
                "fix the teacher (API key, model name, server) and run the calls again"
            )
        return (
            "no LLM calls were recorded, so there is nothing to save. The handler sees only "
            "calls made under its CallbackManager: pass `callback_manager=` to the LLM, and "
            "for query engines set `Settings.callback_manager = CallbackManager([handler])` "
            "before building them (a query engine replaces its LLM's callback manager with "
            "the one in Settings)"
        )


def _to_dict(message: ChatMessage) -> dict[str, str]:
    return {"role": message.role.value, "content": message.content or ""}
