"""Push notifications: a persistent queue drained by bounded concurrent HTTPS POSTs.

``enqueue()`` is synchronous and cheap (one small file write), so the dict commit that asks for
a notification never waits for the network. A single task pops due items from an in-memory heap
of (due time, key) -- the token itself stays on disk -- and POSTs at most ``concurrency`` of them
at a time over one ``aiohttp.ClientSession`` (keep-alive connection pool).

Outcomes: 200 -> done; 410 -> the token is gone and is removed from the user; anything else or a
network error -> retried on the schedule of ``backoff.RetrySchedule``, given up at the deadline.
Logging is bounded: one line per notification that is given up, removed by a 410 or delivered
after retries; everything else is counted and reported in one summary line per interval.
"""

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable

import aiohttp

from chatmaild.metadata.backoff import RetrySchedule
from chatmaild.metadata.queue import QueueDir, QueueItem, item_key

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 32
DEFAULT_MAX_PENDING = 100_000
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
SUMMARY_INTERVAL = 300.0


class Notifier:
    def __init__(
        self,
        queue_dir,
        url: str,
        on_token_gone: Callable[[str, str], None],
        *,
        schedule: RetrySchedule = RetrySchedule(),
        concurrency: int = DEFAULT_CONCURRENCY,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Callable[[], float] = time.time,
        timeout: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
        summary_interval: float = SUMMARY_INTERVAL,
        max_wait: float = 60.0,
    ):
        self.queue = QueueDir(queue_dir)
        self.url = url
        self.on_token_gone = on_token_gone
        self.schedule = schedule
        self.concurrency = concurrency
        self.max_pending = max_pending
        self.clock = clock
        self.timeout = timeout
        self.summary_interval = summary_interval
        self.max_wait = max_wait  # re-check the clock at least this often (clock jumps, fakes)
        self._heap: list[tuple[float, str]] = []
        self._waiting: set[str] = set()  # keys in the heap
        self._inflight: set[str] = set()
        self._again: set[str] = set()  # in flight, and a new message arrived meanwhile
        self._waiter: asyncio.Future | None = None  # resolved to wake the sending loop
        self._tasks: set[asyncio.Task] = set()
        self._sem = asyncio.Semaphore(concurrency)
        self.stats = Counter()  # since start
        self._reported = Counter()
        self._last_error = ""

    # -- queue side (called from dict commits, synchronous) --

    def load(self) -> int:
        """Read the queue directory into the heap; call once before serving. Returns the count."""
        now = self.clock()
        for item in self.queue.load(now):
            self._push(item.due, item.key)
        if self._heap:
            log.info("notification queue: resumed %d pending notification(s)", len(self._heap))
        return len(self._heap)

    def enqueue(self, addr: str, token: str) -> None:
        if not self.url:  # notification_url is empty: push notifications are off
            self.stats["off"] += 1
            return
        key = item_key(addr, token)
        if key in self._inflight:
            self._again.add(key)
            self.stats["coalesced"] += 1
            return
        if key in self._waiting:
            self.stats["coalesced"] += 1
            return
        if len(self._waiting) >= self.max_pending:
            self.stats["overflow"] += 1
            return
        now = self.clock()
        self.queue.write(QueueItem(key, addr, token, now, 0, now))
        self.stats["queued"] += 1
        self._push(now, key)

    def _push(self, due: float, key: str) -> None:
        heapq.heappush(self._heap, (due, key))
        self._waiting.add(key)
        if self._heap[0][1] == key:
            self.poke()

    def poke(self) -> None:
        """Re-check the heap now (new earliest item; tests advancing a fake clock)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def depth(self) -> int:
        """Pending notifications: waiting plus in flight."""
        return len(self._waiting) + len(self._inflight)

    # -- sending side --

    async def run(self) -> None:
        """Drain the queue until cancelled; in-flight items stay on disk and resume later."""
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
            self._session = session
            summary = asyncio.create_task(self._summaries())
            try:
                while True:
                    await self._sem.acquire()
                    try:
                        key = await self._next_due()
                    except BaseException:
                        self._sem.release()
                        raise
                    self._inflight.add(key)
                    task = asyncio.create_task(self._attempt(key))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            finally:
                summary.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(summary, *self._tasks, return_exceptions=True)
                self.log_summary()

    async def _next_due(self) -> str:
        while True:
            if self._heap:
                due, key = self._heap[0]
                delay = due - self.clock()
                if delay <= 0:
                    heapq.heappop(self._heap)
                    self._waiting.discard(key)
                    return key
            else:
                delay = self.max_wait
            # a plain future and a timer: asyncio.wait_for can swallow a cancellation (3.11)
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(min(delay, self.max_wait), self.poke)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None

    async def _attempt(self, key: str) -> None:
        item = None
        try:
            item = self.queue.read(key)
            if item is None:
                return
            if self.schedule.expired(item.first_attempt, self.clock()):
                self._give_up(item, "deadline passed while queued")
                return
            outcome = await self._post(item.token)
            item.attempts += 1
            self.stats["attempts"] += 1
            if item.attempts > 1:
                self.stats["retried"] += 1
            if outcome == 200:
                self._delivered(item)
            elif outcome == 410:
                self._token_gone(item)
            else:
                self._failed(item, outcome)
        except asyncio.CancelledError:
            if self.queue.exists(key):
                # shutting down mid-request: the file is unchanged, keep it counted
                self._push(item.due if item is not None else self.clock(), key)
            raise
        except Exception:
            log.exception("notification %s: unexpected error", key)
        finally:
            self._inflight.discard(key)
            self._again.discard(key)
            self._sem.release()

    async def _post(self, token: str) -> int | str:
        try:
            async with self._session.post(self.url, data=token.encode()) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    def _delivered(self, item: QueueItem) -> None:
        self.queue.remove(item.key)
        self.stats["delivered"] += 1
        if item.attempts > 1:
            log.info(
                "notification for %s delivered after %d attempts (%.1f s)",
                item.addr,
                item.attempts,
                self.clock() - item.first_attempt,
            )
        if item.key in self._again:
            self._again.discard(item.key)
            self._inflight.discard(item.key)
            self.enqueue(item.addr, item.token)

    def _token_gone(self, item: QueueItem) -> None:
        self.queue.remove(item.key)
        self.stats["gone"] += 1
        log.info("notification server: token of %s is gone (410), removing it", item.addr)
        try:
            self.on_token_gone(item.addr, item.token)
        except Exception as e:
            log.warning("could not remove the gone token of %s: %s", item.addr, e)

    def _failed(self, item: QueueItem, outcome) -> None:
        self.stats["failed_attempts"] += 1
        self._last_error = f"HTTP {outcome}" if isinstance(outcome, int) else outcome
        due = self.schedule.next_attempt(item.first_attempt, item.attempts)
        if due is None:
            self._give_up(item, self._last_error)
            return
        item.due = due
        self.queue.write(item)
        self._push(due, item.key)

    def _give_up(self, item: QueueItem, why: str) -> None:
        self.queue.remove(item.key)
        self.stats["dropped"] += 1
        log.warning(
            "notification for %s dropped after %d attempt(s) over %.1f s: %s",
            item.addr,
            item.attempts,
            self.clock() - item.first_attempt,
            why,
        )

    # -- aggregate logging --

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_interval)
            self.log_summary()

    def log_summary(self) -> None:
        """One line with what happened since the last summary (nothing when nothing did)."""
        delta = self.stats - self._reported
        if not delta:
            return
        self._reported = self.stats.copy()
        parts = [f"{delta[name]} {name}" for name in sorted(delta)]
        line = "notifications: " + ", ".join(parts) + f"; {self.depth} pending"
        if delta["failed_attempts"]:
            line += f"; last error: {self._last_error}"
        log.info("%s", line)
