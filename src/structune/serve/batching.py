"""Concurrent requests → batched generation, with a bounded queue and cancellation.

Requests wait in one bounded queue. A single worker takes the oldest request plus every
waiting request that can share its batch (same model, schema, token budget and
`Sampling`) and decodes them together in a thread, so the event loop keeps accepting
connections while the CPU decodes. A seeded request decodes in a batch of its own: a seed
determines one answer only for a conversation decoded alone.

Overload is refused, not absorbed: with `max_queue` requests waiting, `submit` raises
`QueueFull` at once, so latency stays bounded and the caller learns when to retry.
A caller that goes away (its `submit` is cancelled) leaves the queue at once. A batch
whose callers have *all* gone stops at its next decode step (a local model's
`complete_many(should_stop=...)`, a stopping criterion of transformers' `generate`). A
batch with one caller left decodes to the end; the answers of the callers who left are
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from structune.errors import BackendError
from structune.llms.base import LLM
from structune.llms.local import GenerationStopped, LocalLLM
from structune.llms.sampling import Sampling
from structune.messages import Completion, Message

log = logging.getLogger(__name__)

# Waiting requests allowed per request decoded at once, when `max_queue` is not given:
# a new request then waits at most about this many batches before its own starts.
QUEUED_BATCHES = 4


class QueueFull(BackendError):
    """The server has `max_queue` requests waiting; retry after `retry_after_s` seconds."""

    def __init__(self, waiting: int, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the server is busy: {waiting} requests are already waiting; "
            f"retry after {retry_after_s} s"
        )


@dataclass(eq=False)  # a job is itself: `in` and `remove` compare identity
class _Job:
    key: tuple[Any, ...]
    model: str
    messages: list[Message]
    max_tokens: int
    sampling: Sampling
    json_schema: Mapping[str, Any] | None
    future: asyncio.Future[Completion] = field(repr=False)

    @property
    def gone(self) -> bool:
        # Read from the decode thread: a plain state read, safe under the GIL.
        return self.future.cancelled()


class Batcher:
    """Queues chat requests and decodes compatible ones as one batch.

    Args:
        get_llm: model name → loaded `LLM` (called in the worker thread).
        max_batch: the most requests decoded together.
        max_queue: the most requests waiting (not yet decoding); more are refused with
            `QueueFull`. Defaults to `QUEUED_BATCHES * max_batch`.
    """

    def __init__(
        self, get_llm: Callable[[str], LLM], *, max_batch: int = 8, max_queue: int | None = None
    ):
        self.get_llm = get_llm
        self.max_batch = max_batch
        self.max_queue = max_queue if max_queue is not None else QUEUED_BATCHES * max_batch
        self.waiting: list[_Job] = []
        self.running = 0
        self.rejected = 0
        self.cancelled = 0
        self._last_batch_s = 0.0
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def stats(self) -> dict[str, int]:
        """Requests waiting and decoding now; refused and cancelled since the start."""
        return {
            "waiting": len(self.waiting),
            "running": self.running,
            "max_queue": self.max_queue,
            "rejected": self.rejected,
            "cancelled": self.cancelled,
        }

    def refuse_if_full(self) -> None:
        """Raise `QueueFull` when `max_queue` requests are waiting: check before any work.

        Raises:
            QueueFull: the queue is full.
        """
        if len(self.waiting) >= self.max_queue:
            self.rejected += 1
            # The queue drains about one batch at a time: the last batch's time is the guess.
            raise QueueFull(len(self.waiting), max(1, math.ceil(self._last_batch_s)))

    async def submit(
        self,
        model: str,
        messages: list[Message],
        *,
        max_tokens: int,
        sampling: Sampling,
        json_schema: Mapping[str, Any] | None,
        schema_key: str | None,
    ) -> Completion:
        """Wait for this request's turn and answer it.

        Raises:
            QueueFull: `max_queue` requests are already waiting.
        """
        self.refuse_if_full()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        key: tuple[Any, ...] = (model, schema_key, max_tokens, sampling)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        if sampling.seed is not None:
            key = (*key, future)  # shared with no other job: a batch of its own
        job = _Job(key, model, messages, max_tokens, sampling, json_schema, future)
        self.waiting.append(job)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:  # the caller went away; cancelling also cancelled `future`
            self.cancelled += 1
            if job in self.waiting:
                self.waiting.remove(job)
            raise

    async def _run(self) -> None:
        while True:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self.waiting[0]
            batch = [job for job in self.waiting if job.key == first.key][: self.max_batch]
            self.waiting = [job for job in self.waiting if job not in batch]
            await self._decode_batch(batch)

    async def _decode_batch(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        self.running = len(batch)
        try:
            completions = await asyncio.to_thread(self._decode, batch)
        except GenerationStopped:
            seconds = time.perf_counter() - started
            log.info(
                "stopped decoding a batch of %d after %.1f s: its clients went away",
                len(batch),
                seconds,
            )
            return
        except Exception as exc:  # the error goes to every caller of this batch
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self.running = 0
        for job, completion in zip(batch, completions, strict=True):
            if not job.future.done():  # a client that went away has a cancelled future
                job.future.set_result(completion)

    def _decode(self, batch: list[_Job]) -> list[Completion]:
        first = batch[0]
        llm = self.get_llm(first.model)  # the first use loads it: not part of the decode time
        started = time.perf_counter()
        # Remote backends answer in one call: only a local model can stop between tokens.
        stop = {"should_stop": lambda: all(job.gone for job in batch)}
        completions = llm.complete_many(
            [job.messages for job in batch],
            max_tokens=first.max_tokens,
            sampling=first.sampling,
            json_schema=first.json_schema,
            **(stop if isinstance(llm, LocalLLM) else {}),
        )
        self._last_batch_s = time.perf_counter() - started
        return completions
