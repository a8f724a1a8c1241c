"""Every shell and Python block of the README runs as pasted, against real servers on free loopback
ports: only the port numbers are changed (8000, 9100, 6379), and servers write under a temporary
data directory. Server commands run until ready, then are stopped. ``make test`` alone is not run
here: it is what runs this file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import httpx
import pytest
from support import free_port, serve, wait_until

REPO = Path(__file__).parents[1]
README = REPO / "README.md"
NOT_RUN = {"make test": "it is the command that runs this test"}
SERVER_COMMANDS = ("make serve", "reelserve serve", "reelserve api", "reelserve worker", "redis-server")


def blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced bash, python or text block."""
    return re.findall(r"```(bash|python|text)\n(.*?)```", README.read_text(), re.S)


def commands(code: str) -> list[str]:
    return [line.split("#")[0].strip() for line in code.splitlines() if line.split("#")[0].strip()]


def is_server_block(code: str) -> bool:
    return all(line.startswith(SERVER_COMMANDS + tuple(NOT_RUN)) for line in commands(code))


def test_every_block_is_run_by_a_test_here() -> None:
    found = blocks()
    assert len(found) >= 5
    for language, code in found:
        assert language in ("python", "text") or is_server_block(code) or "curl" in code, code


def test_the_example_prompts_are_the_model_cards() -> None:
    """The README's prompts are the ones the playground offers (and a test generates each)."""
    from reelserve.models.micro import MICRO_CARD

    (code,) = [code for language, code in blocks() if language == "text"]
    assert code.strip().splitlines() == MICRO_CARD.examples


def test_the_try_it_curl_block_works_as_pasted(tmp_path: Path) -> None:
    (code,) = [code for language, code in blocks() if language == "bash" and "curl" in code]
    with serve(tmp_path / "data", model="micro") as running:
        port = running.url.rsplit(":", 1)[1]
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code.replace(":8000", f":{port}")],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'event: status' in result.stdout and '"status":"completed"' in result.stdout
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 17
    assert (tmp_path / "thumb.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_the_openai_sdk_snippet_works_as_pasted(tmp_path: Path) -> None:
    (snippet,) = [code for language, code in blocks() if language == "python"]
    with serve(tmp_path / "data", model="micro") as running:
        port = running.url.rsplit(":", 1)[1]
        result = subprocess.run([sys.executable, "-c", snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "completed"
        assert running.client.get("/v1/videos").json()["data"] == []  # the snippet deleted its job
    with av.open(str(tmp_path / "ball.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (64, 64)
        assert sum(1 for _ in container.decode(video=0)) == 17


SERVER_BLOCKS = [code for language, code in blocks() if language == "bash" and is_server_block(code)]


@pytest.mark.parametrize(
    "code", SERVER_BLOCKS, ids=["-".join(w for w in commands(c)[0].split() if w.isalpha() or "-" in w[1:])[:40]
                                for c in SERVER_BLOCKS],
)
def test_server_blocks_start_as_pasted(code: str, tmp_path: Path) -> None:
    """A block of servers on one port (``make serve``, each preset) is a list of alternatives, started one
    at a time; a block of servers on different ports (Redis, the API, a worker) runs together."""
    ports = {"8000": free_port(), "9100": free_port(), "6379": free_port()}
    lines = [substitute(line, ports) for line in commands(code) if not line.startswith(tuple(NOT_RUN))]
    together = any(line.startswith("redis-server") for line in lines)
    for group in [lines] if together else [[line] for line in lines]:
        with started(group, tmp_path, ports["8000"]) as processes:
            for line, (process, log) in zip(group, processes, strict=True):
                if line.startswith("redis-server"):
                    ready = lambda: _answers_ping(ports["6379"])  # noqa: E731
                else:
                    port = int(m.group(1)) if (m := re.search(r"--port (\d+)", line)) else ports["8000"]
                    ready = lambda port=port: _ready(port)  # noqa: E731

                def up(ready=ready, process=process, log=log, line=line) -> bool:  # type: ignore[no-untyped-def]
                    assert process.poll() is None, f"{line!r} exited:\n{log.read_text()[-2000:]}"
                    return ready()

                wait_until(up, timeout=180, interval=0.25)


def substitute(line: str, ports: dict[str, int]) -> str:
    for old, new in ports.items():
        line = re.sub(rf"\b{old}\b", str(new), line)
    return line


@contextmanager
def started(lines: list[str], workdir: Path, default_port: int) -> Iterator[list[tuple[subprocess.Popen, Path]]]:
    """Each line as its own shell command (in its own process group), stopped afterwards. The shell
    finds ``reelserve`` as a user's would after installing (the venv's bin first on PATH). A server
    that names no port gets the substitute of 8000 through REELSERVE_PORT, as the README says any
    flag may come."""
    env = {**os.environ, "REELSERVE_DATA_DIR": str(workdir / "data"), "REELSERVE_PORT": str(default_port),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    processes: list[subprocess.Popen] = []
    logs = []
    try:
        for line in lines:
            logs.append(workdir / f"{len(processes)}.log")
            processes.append(subprocess.Popen(line, shell=True, cwd=REPO if line.startswith("make") else workdir,
                                              env=env, stdout=logs[-1].open("w"), stderr=subprocess.STDOUT,
                                              start_new_session=True))
        yield list(zip(processes, logs, strict=True))
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _answers_ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False
