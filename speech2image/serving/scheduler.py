"""The scheduler of an executor replica: one request's model work at a time, a bounded queue
that refuses at once when full, deadlines, and cancellation.

Jina hands a replica's requests to its executor concurrently (`allow_concurrent`, async
methods), so requests wait here, first come first served, where the wait is measured. At most
`max_queued_requests` wait; one more is refused with Busy, which carries how long to wait
(`retry_after`, an estimate from the recent service times) and says it in its one line. A
request whose deadline passes while it waits is dropped (DeadlineExceeded) instead of being
done for nobody, and one whose call is cancelled (its client went away: the gateway cancels the
call) leaves the queue. The model work runs in a thread (:meth:`Scheduler.run`) that checks its
:class:`Turn` between two steps, and stops there when the deadline passes or the call is
cancelled.
"""

import asyncio
import collections
import contextlib
import statistics
import threading
import time
from typing import Callable, Optional

from ..errors import Busy, Cancelled, DeadlineExceeded


class Turn:
    """A request's deadline (an instant of `clock`, time.monotonic by default) and cancellation,
    checked between two steps."""

    def __init__(self, deadline: Optional[float] = None, clock: Callable[[], float] = time.monotonic):
        self.deadline = deadline
        self.clock = clock
        self.cancelled = threading.Event()

    def check(self, where: str) -> None:
        """Raise Cancelled or DeadlineExceeded, naming `where` the work stopped, when due."""
        if self.cancelled.is_set():
            raise Cancelled(f"cancelled at {where}: the client went away")
        if self.deadline is not None and self.clock() > self.deadline:
            raise DeadlineExceeded(f"deadline passed at {where}; ask again with a longer timeout, or for less work")


class Scheduler:
    """Runs one request at a time; `events(kind, value)` is told what happens: "queued" (the queue
    length), "waited" (seconds), "refused", "dropped", "cancelled" (one each).

    The turn passes by futures: a request that finishes hands it to the first one waiting, at
    once and without awaiting anything, so no cancellation can fall between the two and leave
    the replica held by nobody; a waiter handed the turn that is cancelled or out of time
    before it wakes passes it on.

    `clock` (time.monotonic) is what deadlines are instants of: tests pass one they move by hand
    (a wait in the queue lasts, in the event loop's time, what its deadline left it on arrival)."""

    def __init__(self, max_queued_requests: int, events: Optional[Callable[[str, float], None]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.max_queued_requests = max_queued_requests
        self._events = events or (lambda kind, value: None)
        self._clock = clock
        self._waiting: collections.deque = collections.deque()  # futures, set when handed the turn
        self._running = False
        self._service_seconds: collections.deque = collections.deque(maxlen=20)

    def retry_after(self, ahead: int) -> float:
        """Seconds a request refused now should wait: the requests ahead of it at the recent pace."""
        pace = statistics.median(self._service_seconds) if self._service_seconds else 1.0
        return max(1.0, (ahead + 1) * pace)

    @contextlib.asynccontextmanager
    async def turn(self, deadline: Optional[float] = None):
        """Wait for this request's turn — Busy at once when the queue is full, DeadlineExceeded when
        its deadline passes first, CancelledError when its call is cancelled — then hold it for the
        `async with` block, which gets the request's Turn."""
        if len(self._waiting) >= self.max_queued_requests and self._running:
            self._events("refused", 1)
            ahead = len(self._waiting)
            wait = self.retry_after(ahead)
            raise Busy(f"busy: {ahead} request(s) wait for this replica (max_queued_requests="
                       f"{self.max_queued_requests}); retry in about {wait:.0f} s", retry_after=wait)
        entered = self._clock()
        if deadline is not None and deadline <= entered:  # a retried copy of a request that ran out of time
            self._events("dropped", 1)
            raise DeadlineExceeded("deadline passed before the request reached the replica; ask again with a "
                                   "longer timeout")
        if self._running:
            await self._wait(asyncio.get_running_loop().create_future(), deadline, entered)
        self._running = True
        self._events("waited", self._clock() - entered)
        started = self._clock()
        try:
            yield Turn(deadline, self._clock)
        finally:
            self._service_seconds.append(self._clock() - started)
            self._pass_on()

    async def _wait(self, handed, deadline: Optional[float], entered: float) -> None:
        """Wait in the queue until `handed` is set (the turn is this request's now)."""
        self._waiting.append(handed)
        self._events("queued", len(self._waiting))
        try:
            async with asyncio.timeout(None if deadline is None else deadline - self._clock()):
                await asyncio.shield(handed)  # (not wait_for: in 3.11 it may swallow a cancellation)
        except BaseException as e:
            if handed.done() and not handed.cancelled():  # handed the turn, but leaving: pass it on
                self._pass_on()
            else:
                handed.cancel()
                self._waiting.remove(handed)
                self._events("queued", len(self._waiting))
            if isinstance(e, TimeoutError):
                self._events("dropped", 1)
                raise DeadlineExceeded(f"deadline passed after {self._clock() - entered:.1f} s in the queue, "
                                       "before any model work; ask again with a longer timeout, or when the "
                                       "service is less busy") from None
            if isinstance(e, asyncio.CancelledError):
                self._events("cancelled", 1)
            raise

    def _pass_on(self) -> None:
        """The turn goes to the first request waiting, or the replica is free."""
        self._running = bool(self._waiting)
        if self._waiting:
            self._waiting.popleft().set_result(None)
            self._events("queued", len(self._waiting))

    async def run(self, turn: Turn, work: Callable, *args):
        """`work(*args, turn)` in a thread; if the call is cancelled meanwhile (once or more), the
        work is told (turn.cancelled) and awaited until it stops at its next step, so the turn is
        never shared."""
        task = asyncio.ensure_future(asyncio.to_thread(work, *args, turn))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            turn.cancelled.set()
            self._events("cancelled", 1)
            while not task.done():  # a second cancellation must not end the wait either
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(task)
            raise
