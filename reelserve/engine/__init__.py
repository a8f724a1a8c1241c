"""Scheduling and running: queue loop, batcher, pipeline runner, events. Knows nothing of HTTP."""

from reelserve.engine.batcher import Batcher
from reelserve.engine.engine import Engine
from reelserve.engine.events import EventBus
from reelserve.engine.runner import BatchOutcome, PipelineRunner
from reelserve.engine.service import Content, VideoService

__all__ = ["BatchOutcome", "Batcher", "Content", "Engine", "EventBus", "PipelineRunner", "VideoService"]
