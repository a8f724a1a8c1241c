"""The two seams of job handling: where jobs are kept (``JobStore``) and how they wait (``Broker``).

The embedded mode implements both with SQLite and an in-process queue; the distributed mode
implements them on Redis. The engine and the API only ever see these protocols.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from reelserve.schemas import Job, JobStatus


class JobStore(Protocol):
    """Durable job records. A new job and a final state are on disk (or in Redis) before the call
    returns; a write that leaves a job unfinished may be lost with the machine (not the process),
    which a restart cannot tell from never written: it re-runs queued and in-progress jobs alike."""

    def create(self, job: Job, durable: bool = True) -> None:
        """Insert a new job; raises ``ValueError`` if the id exists. Not ``durable``: it may be lost
        with the machine until the next ``make_durable`` or durable write (for a job nobody has
        been told of yet: a client waiting for its final state)."""

    def get(self, job_id: str) -> Job | None: ...

    def list(self, limit: int, after: str | None = None) -> list[Job]:
        """Newest first. ``after`` is a job id: return jobs created before it (cursor paging)."""

    def list_for_tenant(self, tenant: str, limit: int, after: str | None = None) -> list[Job]:
        """``list`` of one tenant's jobs; ``after`` must be one of them (``KeyError`` otherwise)."""

    def save(self, job: Job, expect: Collection[JobStatus] | None = None) -> bool:
        """Write ``job`` back. With ``expect``, only if the stored status is one of those.

        Returns False (and writes nothing) when the stored status is not expected, or the job is
        gone: that is how a cancel racing a completion is settled, atomically, in the store.
        A status change is also appended to the job's transition log.
        """

    def delete(self, job_id: str) -> bool: ...

    def unfinished(self) -> list[Job]:
        """Jobs queued or in progress, oldest first: what a restart must run again."""

    def count_by_status(self) -> dict[JobStatus, int]: ...

    def transitions(self, job_id: str) -> list[tuple[str | None, str]]:
        """The job's status changes in order, as ``(from, to)``; the first is ``(None, 'queued')``."""

    def make_durable(self) -> None:
        """Every write made so far is on disk (or in Redis) when this returns."""

    def close(self) -> None: ...


class Preempted(Exception):
    """Raised by ``Broker.take(preempt_below=...)``: a more urgent job is waiting that cannot join."""


class Broker(Protocol):
    """The queue between acceptance and execution: one FIFO per priority level (0 first). Jobs carry
    a batch key so compatible ones can be taken together."""

    async def put(self, job_id: str, batch_key: str, level: int = 0) -> None: ...

    async def take(
        self,
        batch_key: str | None = None,
        timeout: float | None = None,
        *,
        level: int | None = None,
        preempt_below: int | None = None,
        urgent_first: bool = False,
        up_to: int | None = None,
    ) -> tuple[str, str] | None:
        """Pop the oldest job of the most urgent level (with ``batch_key``, if given) as ``(job_id, batch_key)``.

        ``batch_key`` may be a ``ShapeKey``: any job of that shape (continuous batching).
        ``level``: take from that level first when it has a matching job (a reserved share being served).
        ``preempt_below``: raise ``Preempted`` instead of waiting while a job of a level below it
        (more urgent) is queued with another key; with ``urgent_first``, also instead of taking one
        (a running batch's feeder: that job goes before the batch grows). ``up_to``: only a job of
        that level or a more urgent one (a batch that would slow its rows for a less urgent one). Waits up to ``timeout``
        seconds (forever when None); returns None on timeout."""

    async def requeue(self, job_ids: list[str], batch_key: str, levels: dict[str, int]) -> None:
        """Put jobs that were taken but not started back at the front of their levels, in order."""

    async def discard(self, job_id: str) -> bool:
        """Remove a queued job; False if it was not queued here (a worker may hold it already)."""

    async def position(self, job_id: str) -> int | None:
        """How many jobs are ahead of ``job_id`` (0 = next), or None if it is not queued."""

    async def depth(self) -> int: ...

    async def depth_by_level(self) -> dict[int, int]: ...

    # A shared queue's leases. The embedded queue has none: a restart rebuilds it from the store.

    async def ack(self, job_id: str) -> bool:
        """The job is final and its result stored: it leaves the queue for good."""

    async def heartbeat(self, job_ids: Sequence[str]) -> list[str]:
        """Keep this worker's claim on running jobs; returns those it no longer holds."""

    async def reclaim(self) -> tuple[list[str], list[str]]:
        """Take over jobs of workers presumed dead: ``(reclaimed, given up)``. The caller fails the
        given-up ones (delivered too often) with ``worker_lost``."""

    async def release(self) -> int:
        """Shutting down: hand every job read ahead but not started back to the queue."""
