"""Dynamic batching: concurrent requests wait up to ``max_wait_ms`` for company, then one
``generate`` call decodes all their inputs together (a NAR pass over 16 sentences costs far less
than 16 passes over one). The model runs on one worker thread, so calls never overlap and the
event loop stays free to accept requests meanwhile. At most ``max_queue`` inputs wait: beyond that
``submit`` raises :class:`QueueFull` at once (the service answers 503) instead of queueing work
nobody will wait for. A request cancelled while waiting (its client left) is dropped from its batch.
``housekeeping`` (e.g. handing freed memory back to the system) runs on the same worker thread after
a batch, never during one, at most once per ``housekeeping_every_s`` seconds."""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More inputs are waiting than the queue holds."""


class DynamicBatcher:
    def __init__(self, generate: Callable[[List[str]], List[str]], max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, housekeeping: Optional[Callable[[], object]] = None,
                 housekeeping_every_s: float = 1.0):
        """generate: the model's batch function; max_batch: sentences that end the wait early;
        max_wait_ms: how long the first request of a batch waits for others; max_queue: inputs that
        may wait; housekeeping: called between batches, at most once per housekeeping_every_s."""
        self.generate, self.max_batch, self.max_wait = generate, max_batch, max_wait_ms / 1000.0
        self.max_queue, self.queued = max_queue, 0
        self.housekeeping, self.housekeeping_every_s = housekeeping, housekeeping_every_s
        self.last_housekeeping = time.monotonic()
        self.queue = None
        self.task = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mist-generate")
        self.stats = {"requests": 0, "sentences": 0, "batches": 0, "failed_batches": 0, "busy_s": 0.0,
                      "housekeeping": 0, "housekeeping_s": 0.0}

    async def start(self):
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    def enqueue(self, inputs: List[str]) -> asyncio.Future:
        """Queues one request's inputs (decoded in a batch with whatever else is waiting); the future
        gets their outputs. Cancel it to drop the request. QueueFull when the queue is full."""
        if self.queued + len(inputs) > self.max_queue:
            raise QueueFull(f"{self.queued} inputs are waiting for the model (at most {self.max_queue}): retry later")
        fut = asyncio.get_running_loop().create_future()
        self.queued += len(inputs)
        self.queue.put_nowait((inputs, fut))
        return fut

    async def submit(self, inputs: List[str]) -> List[str]:
        """Decodes one request's inputs (see :meth:`enqueue`)."""
        return await self.enqueue(inputs)

    async def _collect(self):
        items = [await self.queue.get()]
        n = len(items[0][0])
        self.queued -= n
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while n < self.max_batch:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                item = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                break
            items.append(item)
            n += len(item[0])
            self.queued -= len(item[0])
        return items

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            items = [(inputs, fut) for inputs, fut in items if not fut.done()]  # a client may have gone
            if not items:
                continue
            sentences = [s for inputs, _ in items for s in inputs]
            t = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self.executor, self.generate, sentences)
            except Exception as e:  # every request of the batch gets the error; the service goes on
                logger.exception("generate failed on a batch of %d inputs", len(sentences))
                self.stats["failed_batches"] += 1
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            dt = time.perf_counter() - t
            self.stats["busy_s"] += dt
            self.stats["batches"] += 1
            self.stats["requests"] += len(items)
            self.stats["sentences"] += len(sentences)
            logger.debug("batch: %d requests, %d inputs, %.1f ms", len(items), len(sentences), dt * 1000)
            start = 0
            for inputs, fut in items:
                if not fut.done():
                    fut.set_result(outputs[start:start + len(inputs)])
                start += len(inputs)
            if self.housekeeping is not None and time.monotonic() - self.last_housekeeping >= self.housekeeping_every_s:
                await loop.run_in_executor(self.executor, self._housekeep)

    def _housekeep(self):
        t = time.perf_counter()
        try:
            self.housekeeping()
        except Exception:  # housekeeping never stops the service
            logger.exception("housekeeping failed")
        self.last_housekeeping = time.monotonic()
        self.stats["housekeeping"] += 1
        self.stats["housekeeping_s"] += time.perf_counter() - t
