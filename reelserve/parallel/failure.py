"""What a parallel group raises when it loses a rank: torch-free, so the engine's batch loop can tell it
from a broken batch (whose jobs fail) without importing the model side."""


class RankFailure(RuntimeError):
    """A rank of the worker's process group died or stopped answering during a call. The group has been
    built again by the time this is raised: the batch's jobs are to be run again, not failed."""
