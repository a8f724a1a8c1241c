"""The dashboard's numbers: finished jobs and batch sizes in ten-second buckets, and which workers are up."""

from reelserve.stats.base import BUCKET_S, Bucket, StatsRecorder, WorkerStatus, summarize
from reelserve.stats.local import LocalStats
from reelserve.stats.redis import RedisStats

__all__ = ["BUCKET_S", "Bucket", "LocalStats", "RedisStats", "StatsRecorder", "WorkerStatus", "summarize"]
