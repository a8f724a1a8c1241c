"""Why a thread did not stop: for a test that waited on a server thread in vain, where that thread
is, what its event loop's tasks are waiting on (through coroutines and async generators, down to
the awaited future), uvicorn's open connections, and every other thread's innermost frames."""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback

import uvicorn


def connections_of(uv: uvicorn.Server) -> str:
    state = uv.server_state
    lines = [f"tasks {len(state.tasks)}, connections {len(state.connections)}"]
    for connection in list(state.connections):
        conn = getattr(connection, "conn", None)
        cycle = getattr(connection, "cycle", None)
        lines.append(f"  ours {getattr(conn, 'our_state', '?')} theirs {getattr(conn, 'their_state', '?')} "
                     f"cycle {None if cycle is None else (cycle.scope.get('path'), cycle.response_complete)}")
    return "\n".join(lines)


def stack_of(thread: threading.Thread) -> str:
    """Where a thread is now, for a test that waited on it in vain."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return "(gone)"
    text = "".join(traceback.format_stack(frame))
    while frame is not None and frame.f_code.co_name != "run_forever":  # its event loop's pending tasks
        frame = frame.f_back
    loop = frame.f_locals.get("self") if frame is not None else None
    if isinstance(loop, asyncio.AbstractEventLoop):
        for task in asyncio.all_tasks(loop):
            text += f"\ntask {task.get_name()}: " + " -> ".join(_awaiting(task.get_coro()))
    return text


def _awaiting(coro: object) -> list[str]:
    """A suspended coroutine's chain of awaits, outermost first, ending with what it waits on."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:  # a future (a thread's result, a gather, a socket read): say which
            chain.append(repr(coro)[:300])
            break
        chain.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}:{frame.f_lineno}")
        awaited = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
        generator = getattr(frame.f_locals.get("self"), "gen", None)
        if getattr(generator, "ag_frame", None) is not None:
            awaited = generator  # contextlib's __aexit__ awaits the generator's asend, which hides it
        coro = awaited
    return chain


def other_threads() -> str:
    """Every other thread's innermost frames: what a stuck shutdown may be waiting for."""
    text = ""
    for thread in threading.enumerate():
        frame = sys._current_frames().get(thread.ident or -1)
        if frame is not None and thread is not threading.current_thread():
            text += f"\nthread {thread.name}:\n" + "".join(traceback.format_stack(frame)[-4:])
    return text
