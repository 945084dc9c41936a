"""The replica scheduler alone: its bounded queue, fair turns between callers, how long a refused
request is told to wait, deadlines and cancellation, with no model; and the replica's log of a
refusal.

Work is a function that waits on threading events the test sets, so nothing here sleeps to
make something happen; the test waits on the conditions it checks. Deadlines are instants of a
clock the test moves by hand: no verdict depends on how fast the machine runs the test.
"""

import asyncio
import logging
import threading
import time

import pytest

from speech2image.errors import Busy, DeadlineExceeded
from speech2image.serving.logs import one_line_refusals
from speech2image.serving.scheduler import Scheduler, Turn


class Clock:
    """A monotonic clock that stands still until the test moves it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """The scheduler's events, as the executors' metrics get them."""

    def __init__(self):
        self.events: list[tuple[str, float]] = []

    def __call__(self, kind, value):
        self.events.append((kind, value))

    def count(self, kind):
        return sum(value for k, value in self.events if k == kind)


def blocking_work(started: threading.Event, release: threading.Event):
    """Work that says it started, then steps until released, checking its turn between steps."""

    def work(turn: Turn):
        started.set()
        step = 0
        while not release.wait(0.01):
            step += 1
            turn.check(f"step {step}")
        return "done"

    return work


async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.005)


async def occupy(scheduler: Scheduler, caller=None, work=None):
    """A request holding the replica until its `release` is set; returns (task, release)."""
    started, release = threading.Event(), threading.Event()

    async def request():
        async with scheduler.turn(caller=caller, work=work) as turn:
            return await scheduler.run(turn, blocking_work(started, release))

    task = asyncio.ensure_future(request())
    await until(started.is_set)
    return task, release


def test_requests_take_turns_first_come_first_served():
    async def scenario():
        scheduler = Scheduler(max_queued_requests=3)
        order = []
        running, release = await occupy(scheduler)

        async def queued(name):
            async with scheduler.turn():
                order.append(name)

        waiting = [asyncio.ensure_future(queued(name)) for name in "abc"]
        await until(lambda: len(scheduler._waiting) == 3)
        release.set()
        await asyncio.gather(running, *waiting)
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_a_full_queue_refuses_at_once_with_how_long_to_wait():
    async def scenario():
        events = Recorder()
        scheduler = Scheduler(max_queued_requests=1, events=events)
        running, release = await occupy(scheduler)

        async def request():
            async with scheduler.turn():
                return "served"

        queued = asyncio.ensure_future(request())
        await until(lambda: len(scheduler._waiting) == 1)
        with pytest.raises(Busy) as refused:
            await request()
        release.set()
        assert await running == "done" and await queued == "served"  # the refusal took nothing from them
        return refused.value, events

    refusal, events = asyncio.run(scenario())
    message = str(refusal)
    assert message.startswith("busy: 1 request(s) wait for this replica (max_queued_requests=1); retry in about ")
    assert message.endswith(f" {refusal.retry_after:.0f} s") and refusal.retry_after >= 1 and "\n" not in message
    assert events.count("refused") == 1 and ("queued", 1) in events.events


async def queue(scheduler: Scheduler, name: str, caller, served: list, work=None):
    """A request of `caller` that waits in the queue (returned once it does) and, given its turn,
    appends `name` to `served` and ends; its task raises what refused it."""
    async def request():
        async with scheduler.turn(caller=caller, work=work):
            served.append(name)

    before = list(scheduler._waiting)
    task = asyncio.ensure_future(request())
    await until(lambda: any(place not in before for place in scheduler._waiting) or task.done())
    return task


async def finished(scheduler: Scheduler, clock: Clock, work: float, seconds: float) -> None:
    """A request of `work` that takes `seconds` of the clock: what the scheduler learns its pace from."""
    async with scheduler.turn(work=work):
        clock.advance(seconds)


def test_turns_go_round_between_callers_oldest_request_of_the_one_served_least_recently_first():
    async def scenario():
        scheduler = Scheduler(max_queued_requests=4)  # no share: every request queues
        served = []
        running, release = await occupy(scheduler, caller="a")
        tasks = [await queue(scheduler, name, name[0], served) for name in ("a1", "a2", "b1", "b2")]
        release.set()
        await asyncio.gather(running, *tasks)
        return served

    assert asyncio.run(scenario()) == ["b1", "a1", "b2", "a2"]  # b was never served; a just was


def test_a_newcomer_takes_the_newest_queued_place_of_a_caller_over_its_share():
    """Two callers, three places (one running, two queued), a share of half: one place each while
    the other waits. a holds all three; b's request takes a2's place, and is served before a1."""
    async def scenario():
        events = Recorder()
        scheduler = Scheduler(max_queued_requests=2, events=events, max_caller_share=0.5)
        served = []
        running, release = await occupy(scheduler, caller="a")
        a1, a2 = [await queue(scheduler, name, "a", served) for name in ("a1", "a2")]
        b1 = await queue(scheduler, "b1", "b", served)
        with pytest.raises(Busy) as given_up:
            await a2
        assert [place.turn.caller for place in scheduler._waiting] == ["a", "b"]
        release.set()
        await asyncio.gather(running, a1, b1)
        return given_up.value, served, events

    given_up, served, events = asyncio.run(scenario())
    assert str(given_up).startswith("busy: your requests held 3 of this replica's 3 places while another caller's "
                                    "waited (max_caller_share=0.5): the newest gave its place up; retry in about ")
    assert served == ["b1", "a1"] and events.count("refused") == 1


def test_a_caller_alone_may_hold_every_place():
    async def scenario():
        scheduler = Scheduler(max_queued_requests=2, max_caller_share=0.5)
        served = []
        running, release = await occupy(scheduler, caller="a")
        queued = [await queue(scheduler, name, "a", served) for name in ("a1", "a2")]
        with pytest.raises(Busy, match=r"^busy: 2 request\(s\) wait for this replica \(max_queued_requests=2\)"):
            async with scheduler.turn(caller="a"):
                pass
        release.set()
        await asyncio.gather(running, *queued)
        return served

    assert asyncio.run(scenario()) == ["a1", "a2"]


def test_refused_requests_wait_for_the_work_queued_ahead_at_the_learned_pace():
    """5 s per unit of work, learned from a finished request. Four places, a share of two: a runs 4
    units (20 s, 5 s gone) with 2 queued; b has 1 and 3 queued. A newcomer of a, holding its share,
    waits for a's first request (the one running: 15 s); of b, for b's first (next in turn: 15 + 5
    s); of c, under its share but with nobody over theirs, for a place (the one running: 15 s)."""
    async def scenario():
        clock = Clock()
        scheduler = Scheduler(max_queued_requests=3, clock=clock, max_caller_share=0.5)
        await finished(scheduler, clock, work=2, seconds=10)
        running, release = await occupy(scheduler, caller="a", work=4)
        clock.advance(5)
        served = []
        tasks = [await queue(scheduler, name, name[0], served, work) for name, work in (("a1", 2), ("b1", 1),
                                                                                          ("b2", 3))]
        refusals = {}
        for caller in "abc":
            with pytest.raises(Busy) as refused:
                async with scheduler.turn(caller=caller, work=1):
                    pass
            refusals[caller] = refused.value
        release.set()
        await asyncio.gather(running, *tasks)
        return refusals

    refusals = asyncio.run(scenario())
    assert {caller: refusal.retry_after for caller, refusal in refusals.items()} == {"a": 15, "b": 20, "c": 15}
    assert str(refusals["b"]) == ("busy: your requests hold 2 of this replica's 4 places, your share while other "
                                  "callers' wait (max_caller_share=0.5); retry in about 20 s")
    assert str(refusals["c"]) == "busy: 3 request(s) wait for this replica (max_queued_requests=3); retry in about 15 s"


def test_a_request_that_gave_its_place_up_waits_for_its_callers_first_request():
    async def scenario():
        clock = Clock()
        scheduler = Scheduler(max_queued_requests=2, clock=clock, max_caller_share=0.5)
        await finished(scheduler, clock, work=1, seconds=5)
        running, release = await occupy(scheduler, caller="a", work=4)
        clock.advance(5)
        served = []
        a1, a2 = [await queue(scheduler, name, "a", served, work=2) for name in ("a1", "a2")]
        b1 = await queue(scheduler, "b1", "b", served, work=1)
        with pytest.raises(Busy) as given_up:
            await a2
        release.set()
        await asyncio.gather(running, a1, b1)
        return given_up.value

    assert asyncio.run(scenario()).retry_after == 15  # a's first request, running: 20 s of work, 5 s done


def test_before_any_request_finished_the_one_running_gives_the_pace_so_far():
    """Nothing learned yet: the running request (1 unit, 6 s so far) is taken as done now, and a
    queued one of 2 units as twice as long (a lower bound: the running one is not done)."""
    async def scenario():
        clock = Clock()
        scheduler = Scheduler(max_queued_requests=1, clock=clock, max_caller_share=0.5)
        running, release = await occupy(scheduler, caller="a", work=1)
        clock.advance(6)
        b1 = await queue(scheduler, "b1", "b", [], work=2)
        waits = {}
        for caller in "bc":
            with pytest.raises(Busy) as refused:
                async with scheduler.turn(caller=caller, work=1):
                    pass
            waits[caller] = refused.value.retry_after
        release.set()
        await asyncio.gather(running, b1)
        return waits

    assert asyncio.run(scenario()) == {"b": 12, "c": 1}  # c: a place frees when the running one ends (at least 1 s)


def test_busy_carries_its_wait_from_the_executor_to_the_gateway_as_a_number():
    """An executor's error reaches the gateway as Jina's: its class name and its args as strings.
    The gateway rebuilds Busy from them and reads the wait (Retry-After) as a number."""
    from jina.types.request.data import DataRequest

    from speech2image.api.openai import executor_error, retry_after

    answer = DataRequest()
    answer.add_exception(Busy("busy: 2 request(s) wait for this replica; retry in about 7 s", retry_after=6.6))
    exception = answer.header.status.exception
    rebuilt = executor_error(exception.name, exception.args)
    assert isinstance(rebuilt, Busy) and (rebuilt.retry_after, retry_after(rebuilt)) == (6.6, 7)
    assert str(rebuilt) == "busy: 2 request(s) wait for this replica; retry in about 7 s"
    assert retry_after(Busy("busy", retry_after=0.2)) == 1  # Retry-After is whole seconds, at least 1


def test_no_queue_still_serves_one_at_a_time():
    async def scenario():
        scheduler = Scheduler(max_queued_requests=0)
        running, release = await occupy(scheduler)
        with pytest.raises(Busy):
            async with scheduler.turn():
                pass
        release.set()
        assert await running == "done"
        async with scheduler.turn():  # free again
            return True

    assert asyncio.run(scenario())


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_unworked():
    async def scenario():
        events = Recorder()
        clock = Clock()
        scheduler = Scheduler(max_queued_requests=4, events=events, clock=clock)
        running, release = await occupy(scheduler)
        worked = []

        async def request():  # the clock stands still: the deadline is ahead when it arrives, passed in the queue
            async with scheduler.turn(deadline=clock() + 0.05):
                worked.append(True)

        with pytest.raises(DeadlineExceeded, match=r"^deadline passed after 0\.0 s in the queue, before any model "
                                                   r"work; ask again with a longer timeout"):
            await request()
        assert len(scheduler._waiting) == 0 and not worked
        release.set()
        await running
        return events

    events = asyncio.run(scenario())
    assert events.count("dropped") == 1
    assert [kind for kind, _ in events.events].count("waited") == 1  # the running request's only


def test_a_deadline_already_past_is_dropped_before_queueing():
    """A copy of a request that Jina retried after its time ran out is not worked on."""

    async def scenario():
        events = Recorder()
        clock = Clock()
        scheduler = Scheduler(max_queued_requests=4, events=events, clock=clock)
        with pytest.raises(DeadlineExceeded, match="before the request reached the replica"):
            async with scheduler.turn(deadline=clock() - 1):
                pass
        return events

    assert asyncio.run(scenario()).count("dropped") == 1


def test_a_cancelled_queued_request_leaves_the_queue():
    async def scenario():
        events = Recorder()
        scheduler = Scheduler(max_queued_requests=4, events=events)
        running, release = await occupy(scheduler)
        entered = []

        async def request():
            async with scheduler.turn():
                entered.append(True)

        waiting = asyncio.ensure_future(request())
        await until(lambda: len(scheduler._waiting) == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert len(scheduler._waiting) == 0
        release.set()
        await running
        return entered, events

    entered, events = asyncio.run(scenario())
    assert not entered and events.count("cancelled") == 1


@pytest.mark.parametrize("cancellations", [1, 2])
def test_cancelling_running_work_stops_it_at_its_next_step_and_frees_the_replica(cancellations):
    """The next request gets the replica only once the work thread has returned, however many
    times the call is cancelled (the model is never shared)."""
    async def scenario():
        events = Recorder()
        scheduler = Scheduler(max_queued_requests=4, events=events)
        started, never, returned = threading.Event(), threading.Event(), threading.Event()
        work = blocking_work(started, never)

        def watched(turn):
            try:
                return work(turn)
            finally:
                returned.set()

        async def request():
            async with scheduler.turn() as turn:
                return await scheduler.run(turn, watched)

        running = asyncio.ensure_future(request())
        await until(started.is_set)
        for _ in range(cancellations):
            running.cancel()
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await running
        assert returned.is_set()  # stopped at its next step before the call ended
        async with scheduler.turn():
            return events

    assert asyncio.run(scenario()).count("cancelled") == 1


def test_a_request_handed_the_turn_but_cancelled_before_it_wakes_passes_it_on():
    async def scenario():
        events = Recorder()
        scheduler = Scheduler(max_queued_requests=4, events=events)
        entered = []

        async def request(name):
            async with scheduler.turn():
                entered.append(name)

        async with scheduler.turn():
            first, second = asyncio.ensure_future(request("first")), asyncio.ensure_future(request("second"))
            await until(lambda: len(scheduler._waiting) == 2)
        first.cancel()  # the turn was handed to it as the block ended; it has not woken yet
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        async with scheduler.turn():  # and the replica is free again
            return entered, events

    entered, events = asyncio.run(scenario())
    assert entered == ["second"] and events.count("cancelled") == 1


def test_running_work_stops_at_its_deadline_between_steps():
    async def scenario():
        clock = Clock()
        scheduler = Scheduler(max_queued_requests=4, clock=clock)
        started, never = threading.Event(), threading.Event()
        async with scheduler.turn(deadline=clock() + 1) as turn:
            running = asyncio.ensure_future(scheduler.run(turn, blocking_work(started, never)))
            await until(started.is_set)
            assert not running.done()  # stepping while its deadline is ahead
            clock.advance(2)
            return await running

    with pytest.raises(DeadlineExceeded, match=r"^deadline passed at step \d+; ask again with a longer timeout"):
        asyncio.run(scenario())


def test_a_refusal_by_design_is_one_log_line_and_a_bug_keeps_its_stack(caplog):
    """Jina logs each executor exception with its stack: a client could flood the log with them."""
    runtime = logging.getLogger("diffusion/rep-0")  # as Jina names a replica's server (its runtime: …/rep-0/…)
    one_line_refusals("diffusion/rep-0")
    for error in (Busy("busy: 4 request(s) wait for this replica"), ZeroDivisionError("a bug")):
        try:
            raise error
        except Exception as e:
            runtime.error(f"{e!r}\n add --quiet-error to suppress the exception details", exc_info=True)
    refusal, bug = caplog.records[-2:]
    assert (refusal.levelname, refusal.getMessage(), refusal.exc_info) == (
        "WARNING", "refused: Busy: busy: 4 request(s) wait for this replica", None)
    assert bug.levelname == "ERROR" and bug.exc_info[0] is ZeroDivisionError


def test_a_stream_yields_what_the_work_emits_as_it_comes_and_closing_it_stops_the_work():
    scheduler = Scheduler(1)
    read = threading.Semaphore(0)  # one release per item the test has read: the work goes on
    turns = []

    def work(count, emit, turn):
        turns.append(turn)
        for k in range(count):
            turn.check(f"item {k}")
            emit(k)
            read.acquire(timeout=30)

    async def body(turn, emit):
        await scheduler.run(turn, work, 1000, emit)

    async def main():
        seen = []
        stream = scheduler.stream(None, None, body)
        async for item in stream:
            seen.append(item)
            if len(seen) == 3:
                break
            read.release()
        read.release(1000)  # the work never waits again, whatever it emits before it sees the cancel
        await stream.aclose()  # waits until the work stopped at its next check
        return seen

    assert asyncio.run(main()) == [0, 1, 2] and turns[0].cancelled.is_set()


def test_a_streams_turn_ends_with_its_work_however_slowly_its_events_are_read():
    scheduler = Scheduler(1)

    async def body(turn, emit):
        for k in range(3):
            emit(k)

    async def main():
        stream = scheduler.stream(None, None, body)
        first = await anext(stream)
        async with scheduler.turn():  # the next request gets the replica while the first's events wait
            pass
        rest = [item async for item in stream]
        return [first, *rest]

    assert asyncio.run(main()) == [0, 1, 2]


def test_a_stream_raises_the_works_error_after_what_it_emitted():
    async def body(turn, emit):
        emit("first")
        raise DeadlineExceeded("deadline passed at step 2")

    async def main():
        seen, scheduler = [], Scheduler(1)
        with pytest.raises(DeadlineExceeded):
            async for item in scheduler.stream(None, None, body):
                seen.append(item)
        return seen

    assert asyncio.run(main()) == ["first"]
