"""README snippets run as pasted, against a real server (only the port is changed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
from support import serve

README = Path(__file__).parents[1] / "README.md"


def python_block_after(heading: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_the_openai_sdk_snippet_works_as_pasted(tmp_path: Path) -> None:
    snippet = python_block_after("With the official `openai` SDK:")
    with serve(tmp_path / "data", model="micro") as running:
        port = running.url.rsplit(":", 1)[1]
        code = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "completed"
        assert running.client.get("/v1/videos").json()["data"] == []  # the snippet deleted its job
    with av.open(str(tmp_path / "ball.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (64, 64)
        assert sum(1 for _ in container.decode(video=0)) == 17
