"""``benchmarks/import_speed.py --smoke``: the import benchmark runs end to end, and its resumed import is exact.

The smoke run prints the same table as the full one on a few dozen images (its figures mean nothing at that size);
what it checks is that ``juicer import`` killed with SIGKILL part-way and run again imports exactly the rest: no
duplicate item, no orphan file, nothing missing (the benchmark exits 1 otherwise).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.served import REPO

pytestmark = pytest.mark.integration


def test_import_benchmark_smoke_resumes_exactly_after_kill_9():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "import_speed.py"), "--smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "check: exactly the rest imported (no duplicate, no orphan file, none missing)" in done.stdout
    assert "import overhead over the floor" in done.stdout and "peak RSS" in done.stdout
