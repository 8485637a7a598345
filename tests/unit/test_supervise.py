"""The supervisor: restarts with backoff within a budget, fails once and loudly, closes cleanly."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable

import pytest

from tests.support import eventually
from webrtc_broker.supervise import Failure, RestartPolicy, Supervisor, TaskState

pytestmark = pytest.mark.timeout(20)

FAST = RestartPolicy(max_restarts=3, window=60.0, first_delay=0.01, max_delay=0.05)


class Fatal:
    """An ``on_fatal`` that records its calls and lets a test wait for the first."""

    def __init__(self) -> None:
        self.calls: list[Failure] = []
        self.called = asyncio.Event()

    def __call__(self, failure: Failure) -> None:
        self.calls.append(failure)
        self.called.set()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async def probe() -> bool:
        return check()

    await eventually(probe, timeout=timeout, interval=0.005)


async def test_a_failing_restartable_task_is_restarted_and_counted() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        steady.set()
        await asyncio.Event().wait()

    supervisor.start("flaky", flaky, restart=True)
    await asyncio.wait_for(steady.wait(), 5)
    assert runs == 3
    assert supervisor.restarts == {"flaky": 2}
    assert supervisor.states == {"flaky": TaskState.RUNNING}
    assert supervisor.healthy and supervisor.failure is None
    assert not fatal.calls
    await supervisor.close()
    assert supervisor.states == {"flaky": TaskState.STOPPED}


async def test_a_task_that_returns_counts_as_ended() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)
    runs = 0

    async def returns() -> None:
        nonlocal runs
        runs += 1

    supervisor.start("loop", returns, restart=True)
    await asyncio.wait_for(fatal.called.wait(), 5)
    assert runs == FAST.max_restarts + 1
    assert supervisor.restarts == {"loop": FAST.max_restarts}
    failure = supervisor.failure
    assert failure is not None and failure.task == "loop"
    assert "returned" in failure.reason and "restarts exhausted" in failure.reason
    assert supervisor.states == {"loop": TaskState.FAILED}
    await supervisor.close()
    assert supervisor.states == {"loop": TaskState.FAILED}, "close keeps the failure visible"


async def test_a_task_that_is_not_restartable_is_fatal_at_once_and_others_go_on() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)
    beats = 0

    async def heart() -> None:
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.005)

    async def fragile() -> None:
        await asyncio.sleep(0.02)
        raise ValueError("no way back")

    supervisor.start("heart", heart, restart=True)
    supervisor.start("fragile", fragile, restart=False)
    await asyncio.wait_for(fatal.called.wait(), 5)
    assert fatal.calls == [Failure("fragile", "raised ValueError: no way back")]
    assert str(fatal.calls[0]) == "task fragile raised ValueError: no way back"
    assert not supervisor.healthy
    assert supervisor.restarts == {"heart": 0, "fragile": 0}
    before = beats
    await until(lambda: beats > before + 3)  # the healthy task still runs until close
    assert supervisor.states == {"heart": TaskState.RUNNING, "fragile": TaskState.FAILED}
    await supervisor.close()
    assert supervisor.states == {"heart": TaskState.STOPPED, "fragile": TaskState.FAILED}


async def test_on_fatal_is_called_once_for_the_first_failure() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)

    async def first() -> None:
        raise RuntimeError("first")

    async def second() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("second")

    supervisor.start("a", first, restart=False)
    supervisor.start("b", second, restart=False)
    await until(lambda: supervisor.states["b"] is TaskState.FAILED)
    assert [f.task for f in fatal.calls] == ["a"]
    assert supervisor.failure == Failure("a", "raised RuntimeError: first")
    await supervisor.close()


async def test_failures_spread_beyond_the_window_never_exhaust_the_budget() -> None:
    fatal = Fatal()
    # Each failure comes after a delay longer than the window, so at most one is in it.
    policy = RestartPolicy(max_restarts=1, window=0.02, first_delay=0.04, max_delay=0.04)
    supervisor = Supervisor("svc", on_fatal=fatal, policy=policy)

    async def fails() -> None:
        raise RuntimeError("again")

    supervisor.start("slow-failer", fails, restart=True)
    await until(lambda: supervisor.restarts["slow-failer"] >= 4)
    assert supervisor.healthy and not fatal.calls
    await supervisor.close()


async def test_delays_grow_and_are_capped() -> None:
    fatal = Fatal()
    policy = RestartPolicy(max_restarts=10, window=60, first_delay=0.02, max_delay=0.08)
    supervisor = Supervisor("svc", on_fatal=fatal, policy=policy)
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def fails() -> None:
        starts.append(loop.time())
        raise RuntimeError("again")

    supervisor.start("t", fails, restart=True)
    await until(lambda: len(starts) >= 6)
    await supervisor.close()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Nominal 0.02, 0.04, 0.08, 0.08, 0.08 with +-20 % jitter (and scheduling lateness).
    # Lower bounds only (a busy machine adds lateness), with a little slack for the clock.
    assert 0.015 <= gaps[0] < 0.5
    assert gaps[1] >= 0.03
    assert all(gap >= 0.06 for gap in gaps[2:])


async def test_per_task_policy_overrides_the_default() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)

    async def fails() -> None:
        raise RuntimeError("x")

    supervisor.start("once", fails, restart=True, policy=RestartPolicy(1, 60, 0.01, 0.01))
    await asyncio.wait_for(fatal.called.wait(), 5)
    assert supervisor.restarts == {"once": 1}
    await supervisor.close()


async def test_system_exit_inside_a_task_is_that_task_failing() -> None:
    """uvicorn exits this way when its port is taken; the process must not vanish uncleaned."""
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)

    async def exits() -> None:
        sys.exit(1)

    supervisor.start("http", exits, restart=False)
    await asyncio.wait_for(fatal.called.wait(), 5)
    assert fatal.calls == [Failure("http", "raised SystemExit: 1")]
    await supervisor.close()


async def test_a_cancellation_from_within_is_an_ending_not_a_shutdown() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)
    runs = 0

    async def cancelled_inside() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        await asyncio.Event().wait()

    supervisor.start("t", cancelled_inside, restart=True)
    await until(lambda: runs == 2)
    assert supervisor.restarts == {"t": 1}
    assert supervisor.healthy
    await supervisor.close()


async def test_close_cancels_and_awaits_everything_even_while_backing_off() -> None:
    fatal = Fatal()
    slow = RestartPolicy(max_restarts=3, window=60, first_delay=30, max_delay=30)
    supervisor = Supervisor("svc", on_fatal=fatal, policy=slow)
    cleaned = asyncio.Event()

    async def holds() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    async def fails() -> None:
        raise RuntimeError("x")

    supervisor.start("holds", holds, restart=True)
    supervisor.start("waits", fails, restart=True)
    await until(lambda: supervisor.states["waits"] is TaskState.BACKING_OFF)
    async with asyncio.timeout(1):
        await supervisor.close()
    assert cleaned.is_set()
    assert supervisor.states == {"holds": TaskState.STOPPED, "waits": TaskState.STOPPED}
    assert supervisor.healthy and not fatal.calls, "shutting down is not a failure"
    await supervisor.close()  # idempotent
    with pytest.raises(RuntimeError):
        supervisor.start("late", fails, restart=True)


async def test_a_task_that_swallows_its_cancellation_is_not_a_failure_at_close() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return

    supervisor.start("stubborn", stubborn, restart=False)
    await asyncio.sleep(0.01)
    await supervisor.close()
    assert supervisor.healthy and not fatal.calls
    assert supervisor.states == {"stubborn": TaskState.STOPPED}


async def test_names_are_unique_and_policies_checked() -> None:
    supervisor = Supervisor("svc", on_fatal=Fatal(), policy=FAST)

    async def idle() -> None:
        await asyncio.Event().wait()

    supervisor.start("t", idle, restart=True)
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.start("t", idle, restart=True)
    with pytest.raises(ValueError):
        RestartPolicy(max_restarts=-1)
    await supervisor.close()


async def test_an_on_fatal_that_raises_does_not_break_the_supervisor() -> None:
    def broken(_: Failure) -> None:
        raise RuntimeError("callback bug")

    supervisor = Supervisor("svc", on_fatal=broken, policy=FAST)

    async def fails() -> None:
        raise RuntimeError("x")

    supervisor.start("t", fails, restart=False)
    await until(lambda: not supervisor.healthy)
    await supervisor.close()
    assert supervisor.states == {"t": TaskState.FAILED}


async def test_stop_ends_one_task_for_good_and_leaves_the_others() -> None:
    fatal = Fatal()
    supervisor = Supervisor("svc", on_fatal=fatal, policy=FAST)
    cleaned = asyncio.Event()
    runs = 0

    async def link() -> None:
        nonlocal runs
        runs += 1
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    async def other() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("x")

    supervisor.start("link", link, restart=True)
    supervisor.start("other", other, restart=True)
    supervisor.start("broken", fails, restart=False)
    await until(lambda: runs == 1 and not supervisor.healthy)
    await supervisor.stop("link")
    await supervisor.stop("broken")
    assert cleaned.is_set()
    await asyncio.sleep(0.05)
    assert runs == 1, "a stopped task is not restarted"
    assert supervisor.states == {
        "link": TaskState.STOPPED,
        "other": TaskState.RUNNING,
        "broken": TaskState.FAILED,
    }
    assert supervisor.restarts == {"link": 0, "other": 0, "broken": 0}
    await supervisor.close()
    assert supervisor.states["other"] is TaskState.STOPPED
