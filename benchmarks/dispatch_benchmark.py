"""Dispatch through the store: throughput and queue latency of `sdl worker` processes.

In one run: 1, 4 and 16 worker processes (one instrument, `pool:p3ht`) drain N queued
items (default 10,000) from a PostgreSQL store, and one worker drains them from a
SQLite file. Each item is the cheapest complete run (`ring_check`: start, descriptor,
one event, stop; reduced to a value), time scale 0, so what is measured is dispatch:
the fair claim under the instrument's row lock, the lease, the documents written as
they are made, the one-transaction finish, the heartbeats.

    python benchmarks/dispatch_benchmark.py                 # starts a private PostgreSQL cluster
    python benchmarks/dispatch_benchmark.py --url postgresql://USER@HOST:PORT/postgres -n 2000

Prints items/s (first lease to last finish) and queue latency (enqueue -> lease: all
items are enqueued at once into a queue the idle workers wait on, so this is mostly
the wait behind the items ahead, p50 about half the drain time), per configuration,
and the ratios measured in this run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, insert, select

INSTRUMENT = "pool:p3ht"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


def run_config(label: str, url: str, n_workers: int, n_items: int, n_proposals: int, folder: Path) -> dict:
    from sdl.models import new_id
    from sdl.service import crashtest
    from sdl.service.db import ItemRow, WorkerRow
    from sdl.service.dispatch import QUEUE_CHANNEL

    fac = crashtest.Facility(url)
    procs = []
    try:
        props = [fac.seed() for _ in range(n_proposals)]
        for i in range(n_workers):
            procs.append(crashtest.start_worker(folder, url, instrument=INSTRUMENT, time_scale=0.0,
                                                worker_id=f"bench-{label}-{i}",
                                                env={"SDL_HEARTBEAT_S": "2", "SDL_LEASE_TIMEOUT_S": "60"}))

        def all_idle() -> bool:
            with fac.db.read() as s:
                return s.scalar(select(func.count()).select_from(WorkerRow).where(WorkerRow.state == "idle")) \
                    == n_workers
        crashtest.wait_for(all_idle, 180, f"{n_workers} workers idle", procs, poll=0.2)
        # enqueue everything at once (chunks of 1000, each committed with its own time), then wake the workers
        t_enq = time.time()
        rows = []
        for i in range(n_items):
            pid, uid = props[i % n_proposals]
            rows.append({"id": new_id(), "kind": "experiment", "instrument": INSTRUMENT, "plan": "ring_check",
                         "params": {}, "proposal_id": pid, "user_id": uid, "priority": 0, "note": "",
                         "status": "queued", "error": "", "attempts": 0})
        from sdl.store import utcnow

        for k in range(0, n_items, 1000):
            now = utcnow()
            with fac.db.session() as s:
                s.execute(insert(ItemRow), [{**r, "created_at": now} for r in rows[k:k + 1000]])
            if fac.db.engine.dialect.name == "postgresql":
                from sqlalchemy import text

                with fac.db.session() as s:
                    s.execute(text("SELECT pg_notify(:c, :p)"), {"c": QUEUE_CHANNEL, "p": INSTRUMENT})
        enqueue_s = time.time() - t_enq

        def drained() -> bool:
            with fac.db.read() as s:
                return s.scalar(select(func.count()).select_from(ItemRow).where(
                    ItemRow.status.in_(("done", "failed")))) == n_items
        crashtest.wait_for(drained, 3600, f"{n_items} items drained", procs, poll=0.5)
        with fac.db.read() as s:
            data = s.execute(select(ItemRow.created_at, ItemRow.started_at, ItemRow.finished_at, ItemRow.status,
                                    ItemRow.attempts, ItemRow.worker)).all()
        for p in procs:
            p.terminate(timeout=30)
        first = min(d.started_at for d in data)
        last = max(d.finished_at for d in data)
        span = (last - first).total_seconds()
        lat = [(d.started_at - d.created_at).total_seconds() for d in data]
        per_worker = {}
        for d in data:
            per_worker[d.worker] = per_worker.get(d.worker, 0) + 1
        return {
            "config": label, "workers": n_workers, "items": n_items, "proposals": n_proposals,
            "done": sum(d.status == "done" for d in data), "failed": sum(d.status == "failed" for d in data),
            "max_attempts": max(d.attempts for d in data), "items_per_s": n_items / span if span > 0 else None,
            "drain_s": span, "latency_p50_s": _pct(lat, 50), "latency_p99_s": _pct(lat, 99),
            "latency_mean_s": statistics.fmean(lat), "enqueue_s": enqueue_s,
            "items_per_worker_min": min(per_worker.values()), "items_per_worker_max": max(per_worker.values()),
        }
    finally:
        for p in procs:
            p.close()
        fac.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--items", type=int, default=10_000)
    ap.add_argument("--workers", default="1,4,16", help="PostgreSQL worker counts")
    ap.add_argument("--proposals", type=int, default=8, help="proposals sharing the queue (fair share)")
    ap.add_argument("--url", help="PostgreSQL server URL to make databases on (default: a private cluster)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sdl-dispatch-"))
    cluster = None
    if args.url is None:
        from sdl.service.pgcluster import PrivateCluster

        cluster = PrivateCluster().start()

    def pg_db(name: str) -> str:
        if cluster is not None:
            return cluster.create_database(name)
        import psycopg

        from sdl.service.relay import psycopg_dsn

        with psycopg.connect(psycopg_dsn(args.url), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return args.url.rsplit("/", 1)[0] + f"/{name}"

    results = []
    stamp = int(time.time())
    try:
        for n in [int(x) for x in args.workers.split(",") if x]:
            url = pg_db(f"dispatch_{stamp}_{n}")
            r = run_config(f"pg-{n}", url, n, args.items, args.proposals, root)
            results.append(r)
            print(json.dumps(r), flush=True)
        sq = root / "dispatch.sqlite"
        r = run_config("sqlite-1", f"sqlite:///{sq}", 1, args.items, args.proposals, root)
        results.append(r)
        print(json.dumps(r), flush=True)
    finally:
        if cluster is not None:
            cluster.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"{'config':<10} {'workers':>7} {'items/s':>9} {'drain s':>8} {'lat p50 s':>10} {'lat p99 s':>10} "
          f"{'done':>6} {'failed':>6}")
    for r in results:
        print(f"{r['config']:<10} {r['workers']:>7} {r['items_per_s']:>9.1f} {r['drain_s']:>8.1f} "
              f"{r['latency_p50_s']:>10.2f} {r['latency_p99_s']:>10.2f} {r['done']:>6} {r['failed']:>6}")
    base = next(r for r in results if r["config"] == "sqlite-1")
    pg1 = next((r for r in results if r["config"] == "pg-1"), None)
    print()
    print("ratios (measured in this run):")
    for r in results:
        if r is base:
            continue
        line = f"  {r['config']:<6} vs sqlite-1: throughput x{r['items_per_s'] / base['items_per_s']:.2f}, " \
               f"p50 latency x{r['latency_p50_s'] / base['latency_p50_s']:.2f}"
        if pg1 is not None and r is not pg1:
            line += f"; vs pg-1: throughput x{r['items_per_s'] / pg1['items_per_s']:.2f}"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
