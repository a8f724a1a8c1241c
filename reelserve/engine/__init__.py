"""Scheduling and running: queue loop, batcher, pipeline runner, events. Knows nothing of HTTP."""

from reelserve.engine.batcher import Batcher
from reelserve.engine.engine import Engine
from reelserve.engine.events import EventBus
from reelserve.engine.front import VideoFront
from reelserve.engine.outcome import BatchOutcome
from reelserve.engine.service import CacheAdmin, Content, VideoService
from reelserve.engine.video_cache import VideoCache
from reelserve.lazy_names import lazy_names

# Imported on first use: the runner brings torch and diffusers, which the API process never needs.
__getattr__ = lazy_names(__name__, {"PipelineRunner": "reelserve.engine.runner"})

__all__ = [
    "BatchOutcome",
    "Batcher",
    "CacheAdmin",
    "Content",
    "Engine",
    "EventBus",
    "PipelineRunner",
    "VideoCache",
    "VideoFront",
    "VideoService",
]
