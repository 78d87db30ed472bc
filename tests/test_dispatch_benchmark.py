"""The dispatch benchmark (issue 6) runs end to end, in a short version: PostgreSQL with
1 and 2 `sdl worker` processes, against SQLite with one, every item done once.

The full run (10,000 items; 1, 4 and 16 workers) is ``python benchmarks/dispatch_benchmark.py``.
Needs a PostgreSQL server: ``SDL_TEST_DATABASE_URL`` (set by ``.ci/run`` for its PostgreSQL pass).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdl.database import test_database_url as _pg_test_url

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dispatch_benchmark.py"


@pytest.mark.timeout(300)
def test_dispatch_benchmark_short_run(tmp_path):
    url = _pg_test_url()
    if url is None:
        pytest.skip("needs SDL_TEST_DATABASE_URL (a PostgreSQL server); .ci/run's PostgreSQL pass sets it")
    out = tmp_path / "dispatch.json"
    n = 24
    proc = subprocess.run([sys.executable, str(SCRIPT), "-n", str(n), "--workers", "1,2", "--proposals", "3",
                           "--url", url, "--json", str(out)], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["config"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"pg-1", "pg-2", "sqlite-1"}
    for r in results.values():
        assert r["done"] == n and r["failed"] == 0, r
        assert r["items_per_s"] > 0 and 0 <= r["latency_p50_s"] <= r["latency_p99_s"] <= r["drain_s"] + 1
    assert "ratios (measured in this run):" in proc.stdout
    assert "pg-2   vs sqlite-1: throughput x" in proc.stdout and "vs pg-1: throughput x" in proc.stdout
