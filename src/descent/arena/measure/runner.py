"""Run every study's jobs on a pool of worker processes, feeding each study the results
it waits for (the knob trials need the best lr, the seed reruns the best setting).

Workers are spawned (not forked: torch's thread pools do not survive a fork) and use one
thread each, so two workers fill two cores and a run's numbers do not depend on which
worker ran it. ``workers=0`` runs everything in this process, in the same order.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from ..records import Run
from .protocol import Study
from .train import RunSpec, init_worker, train


class InlineExecutor(Executor):
    """Runs each job when submitted, in this process (``workers=0``)."""

    def __init__(self) -> None:
        self._threads = torch.get_num_threads()
        init_worker()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller via the future
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        torch.set_num_threads(self._threads)


def executor(workers: int) -> Executor:
    if workers <= 0:
        return InlineExecutor()
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker
    )


def execute(
    studies: list[Study],
    pool: Executor,
    workers: int,
    on_result: Callable[[Run], None] | None = None,
) -> None:
    """Run all studies to completion on ``pool``; ``on_result`` sees each finished run."""
    owner: dict[str, Study] = {}
    queue: deque[RunSpec] = deque()
    for study in studies:
        for job in study.start():
            owner[job.id] = study
            queue.append(job)
    pending: dict[Future, RunSpec] = {}
    in_flight = max(1, 2 * workers)
    try:
        while queue or pending:
            while queue and len(pending) < in_flight:
                job = queue.popleft()
                pending[pool.submit(train, job)] = job
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                result = future.result()
                unlocked = owner[job.id].done(result)
                for new in reversed(unlocked):
                    owner[new.id] = owner[job.id]
                    queue.appendleft(new)
                if on_result is not None:
                    on_result(result)
    except BaseException:
        for future in pending:
            future.cancel()
        raise


def map_jobs(pool: Executor, fn: Callable[..., Any], jobs: Iterable[tuple]) -> list[Any]:
    """Run ``fn(*job)`` for each job on the pool (the figures); results in job order."""
    futures = [pool.submit(fn, *job) for job in jobs]
    return [f.result() for f in futures]
