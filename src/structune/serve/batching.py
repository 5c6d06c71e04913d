"""Concurrent requests → batched generation.

Requests wait in one asyncio queue. A single worker takes the oldest request plus every
waiting request that can share its batch (same model, schema, token budget and
temperature) and decodes them together in a thread, so the event loop keeps accepting
connections while the CPU decodes. Nothing is dropped: a request waits its turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from structune.llms.base import LLM, Completion, Message


@dataclass
class _Job:
    key: tuple[Any, ...]
    model: str
    messages: list[Message]
    max_tokens: int
    temperature: float
    json_schema: Mapping[str, Any] | None
    future: asyncio.Future[Completion] = field(repr=False)


class Batcher:
    """Queues chat requests and decodes compatible ones as one batch.

    Args:
        get_llm: model name → loaded `LLM` (called in the worker thread).
        max_batch: the most requests decoded together.
    """

    def __init__(self, get_llm: Callable[[str], LLM], *, max_batch: int = 8):
        self.get_llm = get_llm
        self.max_batch = max_batch
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def submit(
        self,
        model: str,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None,
        schema_key: str | None,
    ) -> Completion:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        key = (model, schema_key, max_tokens, temperature)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await self.queue.put(
            _Job(key, model, messages, max_tokens, temperature, json_schema, future)
        )
        return await future

    async def _run(self) -> None:
        pending: list[_Job] = []
        while True:
            if not pending:
                pending.append(await self.queue.get())
            while not self.queue.empty():
                pending.append(self.queue.get_nowait())
            first = pending[0]
            batch = [job for job in pending if job.key == first.key][: self.max_batch]
            pending = [job for job in pending if job not in batch]
            try:
                completions = await asyncio.to_thread(self._decode, batch)
            except Exception as exc:  # the error goes to every caller of this batch
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, completion in zip(batch, completions, strict=True):
                if not job.future.done():  # a client that went away has a cancelled future
                    job.future.set_result(completion)

    def _decode(self, batch: list[_Job]) -> list[Completion]:
        first = batch[0]
        return self.get_llm(first.model).complete_many(
            [job.messages for job in batch],
            max_tokens=first.max_tokens,
            temperature=first.temperature,
            json_schema=first.json_schema,
        )
