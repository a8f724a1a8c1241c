"""Where jobs are kept (``JobStore``) and how they wait (``Broker``)."""

from reelserve.jobs.base import Broker, JobStore
from reelserve.jobs.local_broker import LocalBroker
from reelserve.jobs.sqlite_store import SqliteJobStore

__all__ = ["Broker", "JobStore", "LocalBroker", "SqliteJobStore"]
