"""Long-lived tasks that must live: restarted with backoff, or the service fails.

A service's background loops (a resync, an HTTP endpoint, a link to the
coordinator) are meant to run until shutdown. A bare ``create_task`` whose
coroutine raises logs "Task exception was never retrieved" at garbage
collection if at all, and the service goes on without that part while its ``/healthz``
still says ok. A :class:`Supervisor` owns such tasks by name and makes every
ending visible:

- a task that raises (or returns: it was meant to run until cancelled) and is
  restartable runs again after a capped, jittered exponential delay, at most
  ``RestartPolicy.max_restarts`` times within ``RestartPolicy.window``
  seconds;
- a task that is not restartable, or that used up its restarts, marks the
  supervisor failed and calls ``on_fatal`` once: the service turns its
  ``/healthz`` false and exits non-zero, so that the process supervisor
  (Kubernetes, systemd) starts a fresh one instead of a half-working service
  staying up.

API::

    supervisor = Supervisor("operator", on_fatal=lambda failure: ...)  # Failure -> None
    supervisor.start("resync", lambda: resync_forever(...), restart=True)
    supervisor.start("metrics", serve_metrics, restart=True, policy=RestartPolicy(...))
    await supervisor.stop("resync")  # cancel one task for good
    supervisor.healthy    # False once a task failed for good
    supervisor.failure    # Failure(task, reason) of the first such task, or None
    supervisor.restarts   # {"resync": 0, "metrics": 2}: restarts per task name
    supervisor.states     # {"resync": TaskState.RUNNING, ...}
    await supervisor.close()  # cancel and await every task (idempotent)

``factory`` is a zero-argument callable returning a new coroutine (an
awaitable) each time: a coroutine object can be awaited only once, so a
restart needs a fresh one. ``on_fatal`` is synchronous and is called from the
failed task's runner; it should only flip state and schedule the exit (set a
stop event, a future), not await anything. The other tasks keep running until
:meth:`Supervisor.close`, so the service can still answer ``/healthz`` and
``/metrics`` while it stops.

``SystemExit`` raised inside a task counts as that task failing rather than
the process exiting: uvicorn calls ``sys.exit()`` when it cannot bind its
port, which would otherwise escape the event loop without any cleanup.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from webrtc_broker.backoff import Backoff

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[object]]
"""Makes the coroutine of one run of a task; called again for every restart."""


class TaskState(enum.Enum):
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    """Ended; waiting for its restart delay."""
    FAILED = "failed"
    """Ended for good: not restartable, or out of restarts."""
    STOPPED = "stopped"
    """Cancelled by :meth:`Supervisor.close`."""


@dataclass(frozen=True)
class RestartPolicy:
    """How often a restartable task may end before the service gives up.

    A task that keeps failing within ``window`` seconds is not going to
    recover by itself (a port taken by another process, a bug hit on every
    run): the service exits instead of spinning. Failures older than the
    window are forgotten, and the delay starts again from ``first_delay``.
    """

    max_restarts: int = 5
    window: float = 60.0
    first_delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window <= 0 or self.first_delay < 0:
            raise ValueError(f"invalid restart policy: {self}")


@dataclass(frozen=True)
class Failure:
    """Why the supervisor failed: the first task that ended for good."""

    task: str
    reason: str

    def __str__(self) -> str:
        return f"task {self.task} {self.reason}"


@dataclass
class _Task:
    name: str
    factory: TaskFactory
    restart: bool
    policy: RestartPolicy
    backoff: Backoff
    state: TaskState = TaskState.RUNNING
    restarts: int = 0
    failures: deque[float] = field(default_factory=deque)
    """Loop times of the failures within the policy's window."""
    runner: asyncio.Task[None] | None = None


class Supervisor:
    """Owns named long-lived tasks; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        on_fatal: Callable[[Failure], None],
        policy: RestartPolicy | None = None,
    ) -> None:
        self.name = name
        self._on_fatal = on_fatal
        self._policy = policy or RestartPolicy()
        self._tasks: dict[str, _Task] = {}
        self._failure: Failure | None = None
        self._closing = False

    # -- what the service reads -------------------------------------------

    @property
    def healthy(self) -> bool:
        """True until a task ends for good (what ``/healthz`` should report)."""
        return self._failure is None

    @property
    def failure(self) -> Failure | None:
        return self._failure

    @property
    def restarts(self) -> dict[str, int]:
        """Restarts so far, per task name (a counter: it never goes down)."""
        return {name: task.restarts for name, task in self._tasks.items()}

    @property
    def states(self) -> dict[str, TaskState]:
        return {name: task.state for name, task in self._tasks.items()}

    # -- running -----------------------------------------------------------

    def start(
        self,
        name: str,
        factory: TaskFactory,
        *,
        restart: bool,
        policy: RestartPolicy | None = None,
    ) -> None:
        """Run ``factory()`` as task ``name`` until :meth:`close`.

        ``restart``: whether running it again is safe (a loop that keeps no
        state across runs); otherwise its first ending is fatal.
        ``policy`` overrides the supervisor's default for this task.
        """
        if self._closing:
            raise RuntimeError(f"supervisor {self.name} is closed")
        if name in self._tasks:
            raise ValueError(f"task {name!r} is already supervised")
        chosen = policy or self._policy
        task = _Task(name, factory, restart, chosen, Backoff(chosen.first_delay, chosen.max_delay))
        self._tasks[name] = task
        task.runner = asyncio.get_running_loop().create_task(
            self._run(task), name=f"{self.name}/{name}"
        )

    async def stop(self, name: str) -> None:
        """Cancel task ``name`` for good (a part the service no longer needs, such as
        its coordinator link while it drains) and wait for it to end."""
        task = self._tasks[name]
        if task.state is not TaskState.FAILED:  # a failure stays visible
            task.state = TaskState.STOPPED
        if task.runner is not None:
            task.runner.cancel()
            await asyncio.gather(task.runner, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every task and wait for all of them to end."""
        self._closing = True
        runners = [t.runner for t in self._tasks.values() if t.runner is not None]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        for task in self._tasks.values():
            if task.state is not TaskState.FAILED:
                task.state = TaskState.STOPPED

    async def _run(self, task: _Task) -> None:
        while True:
            task.state = TaskState.RUNNING
            reason = await self._run_once(task)
            if self._closing or task.state is TaskState.STOPPED:
                return
            delay = self._ended(task, reason)
            if delay is None:
                return
            task.state = TaskState.BACKING_OFF
            log.warning("%s: task %s %s; restarting in %.2f s", self.name, task.name, reason, delay)
            await asyncio.sleep(delay)
            task.restarts += 1

    async def _run_once(self, task: _Task) -> str:
        """Run the task once; why it ended."""
        try:
            await task.factory()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closing or (current is not None and current.cancelling()):
                raise
            # Something inside cancelled what the task was awaiting; it ended all the same.
            return "was cancelled from within"
        except (Exception, SystemExit) as exc:
            log.error("%s: task %s failed", self.name, task.name, exc_info=exc)
            return f"raised {type(exc).__name__}: {exc}"
        return "returned"

    def _ended(self, task: _Task, reason: str) -> float | None:
        """Record an unexpected end; the delay before the restart, or None if fatal."""
        if not task.restart:
            self._fail(task, reason)
            return None
        now = asyncio.get_running_loop().time()
        failures = task.failures
        while failures and now - failures[0] > task.policy.window:
            failures.popleft()
        if not failures:
            task.backoff.reset()
        failures.append(now)
        if len(failures) > task.policy.max_restarts:
            self._fail(
                task,
                f"{reason} ({len(failures)} times within {task.policy.window:g} s, "
                f"restarts exhausted)",
            )
            return None
        return task.backoff.next_delay()

    def _fail(self, task: _Task, reason: str) -> None:
        task.state = TaskState.FAILED
        log.critical("%s: task %s %s; giving up", self.name, task.name, reason)
        if self._failure is not None:
            return
        self._failure = Failure(task.name, reason)
        try:
            self._on_fatal(self._failure)
        except Exception:
            log.exception("%s: on_fatal callback failed", self.name)
