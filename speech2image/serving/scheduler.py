"""The scheduler of an executor replica: one request's model work at a time, a bounded queue
that refuses at once when full, fair turns between callers, deadlines, and cancellation.

Jina hands a replica's requests to its executor concurrently (`allow_concurrent`, async
methods), so requests wait here, where the wait is measured. At most `max_queued_requests`
wait; one more is refused with Busy, which carries how long to wait (`retry_after`, from the
work queued ahead at the pace learned from the requests that finished) and says it in its one
line. Callers (the gateway's `caller` parameter: the API key's id) share the replica: while the
queue is full, a caller's newcomer takes the place of the newest queued request of a caller
holding more than `max_caller_share` of the replica's places, and the turn goes round between
callers. A request whose deadline passes while it waits is dropped (DeadlineExceeded) instead of
being done for nobody, and one whose call is cancelled (its client went away: the gateway
cancels the call) leaves the queue. The model work runs in a thread (:meth:`Scheduler.run`)
that checks its :class:`Turn` between two steps, and stops there when the deadline passes or
the call is cancelled.
"""

import asyncio
import collections
import contextlib
import dataclasses
import math
import threading
import time
from typing import Callable, Hashable, Optional

from ..errors import Busy, Cancelled, DeadlineExceeded

CALLER = "caller"  # a request parameter the gateway fills (the API key's id): whose request it is


class Turn:
    """A request's deadline (an instant of `clock`, time.monotonic by default) and cancellation,
    checked between two steps; its `caller`, and its `work` (the executor's units: megapixel-steps,
    beam-seconds; None while unknown, and an executor may set it once it knows)."""

    def __init__(self, deadline: Optional[float] = None, clock: Callable[[], float] = time.monotonic,
                 caller: Hashable = None, work: Optional[float] = None):
        self.deadline = deadline
        self.clock = clock
        self.caller = caller
        self.work = work
        self.cancelled = threading.Event()

    def check(self, where: str) -> None:
        """Raise Cancelled or DeadlineExceeded, naming `where` the work stopped, when due."""
        if self.cancelled.is_set():
            raise Cancelled(f"cancelled at {where}: the client went away")
        if self.deadline is not None and self.clock() > self.deadline:
            raise DeadlineExceeded(f"deadline passed at {where}; ask again with a longer timeout, or for less work")


@dataclasses.dataclass(eq=False)
class _Place:
    """A request waiting in the queue: its Turn, and the future set when it is handed the turn (or
    failed with Busy when it gives its place up to another caller's request)."""

    turn: Turn
    handed: asyncio.Future


class Scheduler:
    """Runs one request at a time; `events(kind, value)` is told what happens: "queued" (the queue
    length), "waited" (seconds), "refused", "dropped", "cancelled" (one each).

    The turn passes by futures: a request that finishes hands it to the next one waiting, at
    once and without awaiting anything, so no cancellation can fall between the two and leave
    the replica held by nobody; a waiter handed the turn that is cancelled or out of time
    before it wakes passes it on. The next one is the oldest request of the caller served least
    recently (one caller alone: first come, first served).

    A caller may hold `max_caller_share` of the replica's places (the one running and the
    queue's; at least one place): while the queue is full, a newcomer of a caller under its
    share takes the place of the newest queued request of the caller holding the most places
    over its share, which is refused with Busy. A caller alone may hold every place.

    `clock` (time.monotonic) is what deadlines and service times are instants of: tests pass one
    they move by hand (a wait in the queue lasts, in the event loop's time, what its deadline
    left it on arrival)."""

    def __init__(self, max_queued_requests: int, events: Optional[Callable[[str, float], None]] = None,
                 clock: Callable[[], float] = time.monotonic, max_caller_share: float = 1.0):
        self.max_queued_requests = max_queued_requests
        self.max_caller_share = max_caller_share
        self.places = 1 + max_queued_requests
        self.share = max(1, math.floor(max_caller_share * self.places + 1e-9))  # places a caller may hold
        self._events = events or (lambda kind, value: None)
        self._clock = clock
        self._waiting: list[_Place] = []  # in arrival order
        self._holder: Optional[Turn] = None  # the request that holds the replica (handed the turn, or running)
        self._started = 0.0  # when it was handed the turn
        self._served: dict = {}  # caller → when it was last handed the turn (a count), for callers present
        self._handed = 0
        self._finished: collections.deque = collections.deque(maxlen=20)  # (work, seconds) of finished requests

    @contextlib.asynccontextmanager
    async def turn(self, deadline: Optional[float] = None, caller: Hashable = None, work: Optional[float] = None):
        """Wait for this request's turn — Busy at once when the queue is full (or later, when
        its place goes to another caller's request), DeadlineExceeded when its deadline passes
        first, CancelledError when its call is cancelled — then hold it for the `async with`
        block, which gets the request's Turn. `work` is what the request asks of the model (None:
        unknown yet; counted as the recent requests' mean)."""
        entered = self._clock()
        if deadline is not None and deadline <= entered:  # a retried copy of a request that ran out of time
            self._events("dropped", 1)
            raise DeadlineExceeded("deadline passed before the request reached the replica; ask again with a "
                                   "longer timeout")
        turn = Turn(deadline, self._clock, caller, work)
        if self._holder is not None and len(self._waiting) >= self.max_queued_requests:
            self._make_room_for(caller)
        if self._holder is not None:
            await self._wait(_Place(turn, asyncio.get_running_loop().create_future()), deadline, entered)
        else:
            self._hand(turn)
        self._events("waited", self._clock() - entered)
        finished = False
        try:
            yield turn
            finished = True
        finally:
            if finished and turn.work:  # what the pace is learned from: work done whole
                self._finished.append((turn.work, self._clock() - self._started))
            self._pass_on()

    def _make_room_for(self, caller: Hashable) -> None:
        """The queue is full: give a place of the caller most over its share to `caller`'s
        newcomer (its newest queued request is refused), or refuse the newcomer."""
        held = self._held()
        over = [other for other, count in held.items() if other != caller and count > self.share
                and any(place.turn.caller == other for place in self._waiting)]
        if over and held.get(caller, 0) < self.share:
            most = max(over, key=lambda other: held[other])
            given_up = next(place for place in reversed(self._waiting) if place.turn.caller == most)
            self._waiting.remove(given_up)
            self._events("refused", 1)
            wait = self.retry_after(most)
            given_up.handed.set_exception(Busy(
                f"busy: your requests held {held[most]} of this replica's {self.places} places while another "
                f"caller's waited (max_caller_share={self.max_caller_share:g}): the newest gave its place up; "
                f"retry in about {wait:.0f} s", retry_after=wait))
            return
        self._events("refused", 1)
        wait = self.retry_after(caller)
        if held.get(caller, 0) >= self.share and len(held) > 1:
            raise Busy(f"busy: your requests hold {held[caller]} of this replica's {self.places} places, your share "
                       f"while other callers' wait (max_caller_share={self.max_caller_share:g}); retry in about "
                       f"{wait:.0f} s", retry_after=wait)
        raise Busy(f"busy: {len(self._waiting)} request(s) wait for this replica (max_queued_requests="
                   f"{self.max_queued_requests}); retry in about {wait:.0f} s", retry_after=wait)

    def retry_after(self, caller: Hashable) -> float:
        """Seconds until a place `caller` may take frees, at least 1: when the request running
        finishes; for a caller holding its share, when its own first request (running, or next
        in turn) finishes. Each request ahead counts at the pace learned (:meth:`_seconds`)."""
        if self._holder is None:
            return 1.0
        ahead = max(0.0, self._seconds(self._holder) - (self._clock() - self._started))
        if self._held().get(caller, 0) >= self.share and self._holder.caller != caller:
            for place in self._in_turn():
                ahead += self._seconds(place.turn)
                if place.turn.caller == caller:
                    break
        return max(1.0, ahead)

    def _seconds(self, turn: Turn) -> float:
        """How long a request's work is expected to take: its work (unknown: the recent requests'
        mean) at the seconds per unit of work of the last requests that finished; before any
        finished, as long as the one holding the replica has taken so far (it is not done: a
        lower bound), in proportion to their work."""
        if self._finished:
            work, seconds = map(sum, zip(*self._finished, strict=True))
            return (turn.work or work / len(self._finished)) * seconds / work
        so_far = self._clock() - self._started
        return so_far * turn.work / self._holder.work if turn.work and self._holder.work else so_far

    def _held(self) -> dict:
        """Places held per caller: the request holding the replica and those queued."""
        held = collections.Counter(place.turn.caller for place in self._waiting)
        if self._holder is not None:
            held[self._holder.caller] += 1
        return held

    def _in_turn(self) -> list[_Place]:
        """The queue in the order it will be served if nothing else arrives: round by round, one
        request of each caller, the caller served least recently first (then by arrival)."""
        by_caller: dict = {}
        for place in self._waiting:
            by_caller.setdefault(place.turn.caller, []).append(place)
        callers = sorted(by_caller, key=lambda caller: self._served.get(caller, -1))
        rounds = max(map(len, by_caller.values()), default=0)
        return [by_caller[caller][n] for n in range(rounds) for caller in callers if n < len(by_caller[caller])]

    def _hand(self, turn: Turn) -> None:
        self._holder, self._started = turn, self._clock()
        self._handed += 1
        self._served[turn.caller] = self._handed

    async def _wait(self, place: _Place, deadline: Optional[float], entered: float) -> None:
        """Wait in the queue until the place is handed the turn."""
        self._waiting.append(place)
        self._events("queued", len(self._waiting))
        try:
            async with asyncio.timeout(None if deadline is None else deadline - self._clock()):
                await asyncio.shield(place.handed)  # (not wait_for: in 3.11 it may swallow a cancellation)
        except BaseException as e:
            handed = place.handed
            if handed.done() and not handed.cancelled() and handed.exception() is None:
                self._pass_on()  # handed the turn, but leaving: pass it on
            elif place in self._waiting:
                handed.cancel()
                self._waiting.remove(place)
                self._forget_if_gone(place.turn.caller)
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
        """The turn goes to the next request in turn, or the replica is free."""
        previous, self._holder = self._holder, None
        if self._waiting:
            place = self._in_turn()[0]
            self._waiting.remove(place)
            self._hand(place.turn)
            place.handed.set_result(None)
            self._events("queued", len(self._waiting))
        if previous is not None:
            self._forget_if_gone(previous.caller)

    def _forget_if_gone(self, caller: Hashable) -> None:
        """A caller with no request here is forgotten: it is served first when it comes back."""
        if caller not in self._held():
            self._served.pop(caller, None)

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

    async def stream(self, deadline: Optional[float], caller: Hashable, body: Callable, work: Optional[float] = None):
        """The events that `body(turn, emit)` emits — a coroutine run in a turn of this replica,
        whose refusal (Busy, DeadlineExceeded) is raised here — yielded as they come; `emit` may
        be called from the event loop or from the work's thread (:meth:`run`). The turn ends when
        the body does, however slowly the events are read; closing the iterator early (its
        caller went away) cancels the body and waits until its work stopped at its next step."""
        loop = asyncio.get_running_loop()
        emitted: asyncio.Queue = asyncio.Queue()

        def emit(item) -> None:
            loop.call_soon_threadsafe(emitted.put_nowait, item)

        async def in_turn():
            async with self.turn(deadline, caller, work) as turn:
                await body(turn, emit)

        done, got = asyncio.ensure_future(in_turn()), None
        try:
            while True:
                while not emitted.empty():  # the work's emits reach the queue before its end does
                    yield emitted.get_nowait()
                if done.done():
                    break
                got = asyncio.ensure_future(emitted.get())
                await asyncio.wait({got, done}, return_when=asyncio.FIRST_COMPLETED)
                if got.done():
                    yield got.result()
                else:
                    got.cancel()
            done.result()
        finally:
            if got is not None:
                got.cancel()
            if not done.done():
                done.cancel()
                with contextlib.suppress(BaseException):  # as run(): the turn is never shared, so wait for it
                    await done
