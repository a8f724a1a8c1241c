"""What a start does with the jobs the last run left unfinished.

Each engine takes its own model's: in process, a running one goes back to queued (its run was lost with
the process) and both are queued again; on a shared queue only a queued job missing from its stream is
put back (running ones belong to live workers, or are reclaimed from dead ones). Another model's job is
its own engine's (several models behind one server), or, on a shared queue, another process's to take;
a server that took a job and no longer serves its model fails it, so that it neither waits for ever nor
runs on the wrong weights.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from reelserve.engine.finisher import RUNNING
from reelserve.schemas import Job, JobStatus

if TYPE_CHECKING:
    from reelserve.engine.front import VideoFront

log = logging.getLogger(__name__)


async def recover_jobs(front: VideoFront) -> int:
    """Re-queues ``front``'s model's unfinished jobs; returns how many."""
    requeued = 0
    for job in await front.jobs.unfinished():
        if job.params.model != front.model_name:
            await _other_model(front, job)
        elif front.scheduler.shared_queue:
            # A queued job lacks its entry only if the API lost Redis between writing it and queueing it.
            if job.status is JobStatus.queued:
                await front.broker.put(job.id, job.params.batch_key(), front.scheduler.level_of(job))
                requeued += 1
        elif await _requeued_in_process(front, job):
            requeued += 1
    return requeued


async def _requeued_in_process(front: VideoFront, job: Job) -> bool:
    if job.status is JobStatus.in_progress:
        job.status, job.progress = JobStatus.queued, 0
        if not await front.jobs.save(job, expect=RUNNING):
            return False
    await front.scheduler.enqueue(job)
    return True


async def _other_model(front: VideoFront, job: Job) -> None:
    if job.params.model in front.served_models or front.scheduler.shared_queue:
        return
    if front.model_name != front.served_models[0]:
        return  # the default model's engine fails it, once
    served = ", ".join(f"'{name}'" for name in front.served_models)
    log.warning("job %s is for model %s, which this server no longer serves: failed", job.id, job.params.model)
    await front.finisher.unserved(job, f"model '{job.params.model}' is no longer served here (this server serves "
                                  f"{served}); submit the request again to a server that serves it")
