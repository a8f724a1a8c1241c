"""Scheduling and running: queue loop, batcher, pipeline runner, events. Knows nothing of HTTP."""

from reelserve.engine.batcher import Batcher
from reelserve.engine.engine import Engine
from reelserve.engine.events import EventBus
from reelserve.engine.runner import BatchOutcome, PipelineRunner
from reelserve.engine.service import CacheAdmin, Content, VideoService
from reelserve.engine.video_cache import VideoCache

__all__ = [
    "BatchOutcome",
    "Batcher",
    "CacheAdmin",
    "Content",
    "Engine",
    "EventBus",
    "PipelineRunner",
    "VideoCache",
    "VideoService",
]
