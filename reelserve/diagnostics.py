"""What a process that will not stop is waiting for: ``kill -USR1 <pid>`` prints every thread's
stack and every asyncio task's to stderr (a server's log), and the process carries on."""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
from types import FrameType


def dump_stacks_on_sigusr1() -> None:
    """Install the handler (the main thread only; where there is no SIGUSR1, nothing)."""
    if not hasattr(signal, "SIGUSR1"):
        return
    signal.signal(signal.SIGUSR1, _print_tasks)
    # Threads from C, at once, even with the interpreter stuck; then the tasks, from Python.
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=True)


def _print_tasks(_signum: int, _frame: FrameType | None) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        print("stacks: no event loop running in the main thread", file=sys.stderr, flush=True)
        return
    for task in asyncio.all_tasks(loop):
        print(f"task {task.get_name()}:", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()
