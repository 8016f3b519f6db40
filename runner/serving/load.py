"""Load levels: a fixed number of requests sent at a concurrency (that many in flight, each sent as soon as one ends)
or at a request rate (Poisson arrivals, seeded, no cap on requests in flight), under a deadline.

At the deadline every request still in flight is cancelled and counted as failed ("time limit"); requests never sent
are counted apart. Nothing here waits past the deadline.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from runner.serving.client import Outcome

Send = Callable[[int, Outcome], Awaitable[Outcome]]  # (request index, its outcome to fill) -> the outcome


@dataclass(frozen=True)
class Level:
    mode: str  # "concurrency" | "rate"
    value: float  # requests in flight, or requests/s

    @property
    def label(self) -> str:
        return f"concurrency {int(self.value)}" if self.mode == "concurrency" else f"rate {self.value:g}/s"


def levels(concurrency: list[int], rates: list[float]) -> list[Level]:
    return [Level("concurrency", c) for c in sorted(concurrency)] + [Level("rate", r) for r in sorted(rates)]


def arrivals(rate: float, n: int, seed: int) -> list[float]:
    """Send times (seconds from the level's start) of n Poisson arrivals: the first at 0, then exponential gaps.
    Seeded by the job's seed and the rate, so every host sends the same schedule."""
    rng = random.Random(f"{seed}:{rate!r}")
    times, t = [], 0.0
    for _ in range(n):
        times.append(t)
        t += rng.expovariate(rate)
    return times


@dataclass
class LevelRun:
    level: Level
    outcomes: list[Outcome]  # the requests sent, in request order
    not_sent: int  # requests the deadline left unsent
    seconds: float  # from the first send to the last end (or the deadline)


async def run_level(level: Level, n: int, send: Send, deadline: float, seed: int) -> LevelRun:
    """Send n requests at `level`; `deadline` is a time.perf_counter() instant."""
    slots: list[Outcome | None] = [None] * n
    t0 = time.perf_counter()

    def start(i: int) -> Outcome:
        o = slots[i] = Outcome(start=time.perf_counter())
        return o

    if level.mode == "concurrency":
        pending = iter(range(n))  # shared: each index taken by one worker

        async def worker():
            for i in pending:
                if time.perf_counter() >= deadline:
                    break
                await send(i, start(i))
        tasks = [asyncio.create_task(worker()) for _ in range(min(int(level.value), n))]
    else:
        async def launcher():
            inflight = []
            try:
                for i, at in enumerate(arrivals(level.value, n, seed)):
                    if t0 + at >= deadline:
                        break
                    await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
                    inflight.append(asyncio.create_task(send(i, start(i))))
                await asyncio.gather(*inflight)
            finally:  # cancelled at the deadline: so are the requests it started
                for task in inflight:
                    task.cancel()
                await asyncio.gather(*inflight, return_exceptions=True)
        tasks = [asyncio.create_task(launcher())]
    await _until(tasks, deadline)
    sent = [o for o in slots if o is not None]
    for o in sent:
        if o.end is None:
            o.fail("time limit", "still running when the job's time limit was reached")
    last = max((o.end for o in sent), default=t0)
    return LevelRun(level, sent, n - len(sent), max(last - t0, 1e-9))


async def _until(tasks: list[asyncio.Task], deadline: float) -> None:
    """Wait for the tasks until the deadline, then cancel what is left and wait for the cancellations."""
    if not tasks:  # nothing to send (no warm-up)
        return
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in tasks:  # a bug in a worker must surface, not read as "no requests"
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
