"""Schemathesis against a real server with two API keys: every operation, every check, a fixed seed,
a bounded number of cases. Afterwards: no 5xx was ever answered, and every job the fuzzer got
accepted reaches a final state. The long run (20,000+ cases) is in docs/security.md."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ADMIN, ALICE, TENANT_KEYS, RunningServer, serve, wait_until

CONFIG = Path(__file__).with_name("schemathesis.toml")
CASES_PER_OPERATION = 60
SEED = 20


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[RunningServer]:
    with serve(tmp_path / "data", adapters=True, **TENANT_KEYS) as running:
        yield running


def schemathesis(url: str, workdir: Path, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).with_name("st")
    command = [str(st), "--config-file", str(CONFIG), "--no-color", "run", f"{url}/openapi.json", "--checks", "all",
               "--seed", str(SEED), "--workers", "1", "--request-timeout", "30", "-H", f"Authorization: Bearer {key}",
               "--report-dir", str(workdir / "report"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=workdir, check=False)


def test_schemathesis_finds_nothing(fuzzed: RunningServer, tmp_path: Path) -> None:
    result = schemathesis(fuzzed.url, tmp_path, ALICE, "--max-examples", str(CASES_PER_OPERATION))
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    generated = re.search(r"(\d+) generated", summary)
    assert generated is not None and int(generated.group(1)) >= 1000, summary
    assert re.search(r"Selected: (\d+)/\1", summary) and "Tested: 23" in summary, summary  # every operation
    # The admin operations, which a tenant's key only ever sees answer 401, with the admin key.
    admin = schemathesis(fuzzed.url, tmp_path, ADMIN, "--max-examples", str(CASES_PER_OPERATION),
                         "--include-path-regex", "^/v1/admin/", "--phases", "examples,coverage,fuzzing")
    assert admin.returncode == 0, admin.stdout[-3000:]

    metrics = fuzzed.client.get("/metrics").text
    server_errors = [line for line in metrics.splitlines() if re.search(r'status="5\d\d"', line)]
    assert server_errors == [], server_errors

    store = fuzzed.server.store
    wait_until(lambda: all(job.status.final for job in store.list(100_000, None)), timeout=240)
