"""HTTP service under load: submissions per second and latency with 1, 10 and 50
concurrent clients while an autonomous campaign runs, and the delay from a document
being made to it reaching a WebSocket client.

The service runs in its own process (``python -m sdl.service.server``, uvicorn, a
scratch SQLite store, instant simulation); the clients are asyncio tasks (httpx), one
user and token each, in this process. Each client submits experiments to
``pool:p3ht`` back to back for ``--seconds``; meanwhile a campaign (random agent) runs
on ``sim-xrd`` and a WebSocket client follows its documents.

    python benchmarks/service_benchmark.py [--seconds 6] [--clients 1,10,50] [--out FILE]

Besides absolute numbers (they depend on the machine) it prints ratios measured in the
same run: throughput relative to one client, p99/p50, and the campaign's experiment
rate under load relative to no load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def start_server(folder: Path) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    token = "sdl_bench_" + secrets.token_urlsafe(16)
    env = {**os.environ, "SDL_ADMIN_TOKEN": token, "SDL_RATE_LIMIT_PER_MINUTE": "1e9",
           "SDL_RATE_LIMIT_BURST": "1000000", "SDL_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1e9",
           "SDL_RATE_LIMIT_ADDRESS_BURST": "1000000", "SDL_TIME_SCALE": "0", "SDL_INSTRUMENTS": "sim-xrd,pool:p3ht"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdl.service.server", "--port", str(port), "--host", "127.0.0.1",
         "--store", f"sqlite:///{folder / 'bench.sqlite'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"), cwd=str(ROOT),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url, token
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the service did not start")
        time.sleep(0.2)
    raise TimeoutError("the service did not start in 120 s")


def setup(url: str, admin_token: str, n_users: int) -> dict:
    from sdl.client import Client

    admin = Client(url, admin_token)
    owner_out = admin.create_user("bench-owner")
    owner = Client(url, owner_out["token"])
    camp_prop = owner.create_proposal("campaign", ["sim-xrd"])
    admin.approve(camp_prop["id"])
    users = []
    for i in range(n_users):
        out = admin.create_user(f"bench-{i}")
        c = Client(url, out["token"])
        p = c.create_proposal(f"load {i}", ["pool:p3ht"])
        admin.approve(p["id"])
        users.append((out["token"], p["id"]))
    point = owner.get("/api/instruments/pool:p3ht/pool")[0]
    return {"owner": owner, "owner_token": owner_out["token"], "camp_prop": camp_prop["id"], "users": users,
            "point": point}


async def client_loop(c: httpx.AsyncClient, token: str, proposal: str, point: dict, until: float,
                      lat: list[float], errors: list[int]) -> int:
    """One remote user: submit, wait for the answer, submit again (its own token and proposal)."""
    n = 0
    body = {"proposal_id": proposal, "instrument": "pool:p3ht", "parameters": point}
    headers = {"Authorization": f"Bearer {token}"}
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        try:
            r = await c.post("/api/experiments", json=body, headers=headers)
        except httpx.TransportError:  # e.g. a kept-alive connection closed by the server: counted, go on
            errors.append(0)
            continue
        lat.append(time.perf_counter() - t0)
        if r.status_code != 201:
            errors.append(r.status_code)
        n += 1
    return n


async def load_level(url: str, users: list, point: dict, n_clients: int, seconds: float) -> dict:
    lat: list[float] = []
    errors: list[int] = []
    limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        await asyncio.gather(*[c.get("/health") for _ in range(n_clients)])  # open the connections
        until = time.perf_counter() + seconds
        t0 = time.perf_counter()
        counts = await asyncio.gather(*[client_loop(c, tok, pid, point, until, lat, errors)
                                        for tok, pid in users[:n_clients]])
        elapsed = time.perf_counter() - t0
    return {"clients": n_clients, "submissions": sum(counts), "seconds": elapsed,
            "per_second": sum(counts) / elapsed, "p50_ms": 1000 * _pct(lat, 0.5), "p99_ms": 1000 * _pct(lat, 0.99),
            "errors": len(errors)}


class DocDelays:
    """Follows the campaign's documents over a WebSocket; delay = received - document time."""

    def __init__(self, url: str, token: str, campaign_id: str):
        self.url = url.replace("http", "ws", 1) + f"/api/stream?campaign_id={campaign_id}&types=document,campaign"
        self.token = token
        self.delays: list[tuple[float, float]] = []  # (received at, delay)
        self.observations: list[float] = []  # times of campaign observations
        self.task: asyncio.Task | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        import websockets

        async with websockets.connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                                      max_size=2**26) as ws:
            async for msg in ws:
                now = time.time()
                ev = json.loads(msg)
                if ev.get("type") == "hello":
                    self.connected.set()
                elif ev.get("type") == "document" and "time" in ev.get("doc", {}):
                    self.delays.append((now, now - ev["doc"]["time"]))
                elif ev.get("type") == "campaign" and ev.get("event") == "observation":
                    self.observations.append(now)

    def window(self, t0: float, t1: float) -> tuple[list[float], int]:
        d = [x for t, x in self.delays if t0 <= t < t1]
        n = sum(1 for t in self.observations if t0 <= t < t1)
        return d, n


async def main_async(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="sdl-bench-"))
    proc, url, admin_token = start_server(folder)
    print(f"service log: {folder / 'server.log'}")
    try:
        levels = [int(x) for x in args.clients.split(",")]
        s = setup(url, admin_token, max(levels))
        owner = s["owner"]
        camp = owner.create_campaign(s["camp_prop"], {"instrument": "sim-xrd", "agent": "random",
                                                      "budget": 100_000}, start=True)
        follower = DocDelays(url, s["owner_token"], camp["id"])
        follower.task = asyncio.ensure_future(follower.run())
        await asyncio.wait_for(follower.connected.wait(), 30)
        await asyncio.sleep(args.seconds / 2)  # warm-up: the campaign runs alone
        t0 = time.time()
        await asyncio.sleep(args.seconds)
        idle_delays, idle_obs = follower.window(t0, time.time())
        idle_rate = idle_obs / args.seconds
        results = []
        for n in levels:
            t1 = time.time()
            res = await load_level(url, s["users"], s["point"], n, args.seconds)
            d, n_obs = follower.window(t1, time.time())
            res["campaign_experiments_per_s"] = n_obs / res["seconds"]
            res["doc_to_ws_p50_ms"] = 1000 * _pct(d, 0.5)
            res["doc_to_ws_p99_ms"] = 1000 * _pct(d, 0.99)
            results.append(res)
            print(f"{n:>3} clients: {res['per_second']:7.1f} submissions/s, latency p50 {res['p50_ms']:6.1f} ms "
                  f"p99 {res['p99_ms']:7.1f} ms, errors {res['errors']}; campaign "
                  f"{res['campaign_experiments_per_s']:.1f} exp/s; doc->WebSocket p50 {res['doc_to_ws_p50_ms']:.1f} ms "
                  f"p99 {res['doc_to_ws_p99_ms']:.1f} ms", flush=True)
        follower.task.cancel()
        base = results[0]["per_second"]
        summary = {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "seconds_per_level": args.seconds,
            "idle": {"campaign_experiments_per_s": idle_rate, "doc_to_ws_p50_ms": 1000 * _pct(idle_delays, 0.5),
                     "doc_to_ws_p99_ms": 1000 * _pct(idle_delays, 0.99), "documents": len(idle_delays)},
            "levels": results,
            "ratios": {
                **{f"throughput_{r['clients']}_vs_1": r["per_second"] / base for r in results},
                **{f"p99_over_p50_{r['clients']}": r["p99_ms"] / r["p50_ms"] for r in results},
                **{f"campaign_rate_{r['clients']}_vs_idle": (r["campaign_experiments_per_s"] / idle_rate
                                                             if idle_rate else float("nan")) for r in results},
            },
        }
        print(f"idle: campaign {idle_rate:.1f} exp/s; doc->WebSocket p50 {summary['idle']['doc_to_ws_p50_ms']:.1f} ms "
              f"p99 {summary['idle']['doc_to_ws_p99_ms']:.1f} ms ({len(idle_delays)} documents)")
        print("ratios (same run): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["ratios"].items()))
        return summary
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each load level")
    ap.add_argument("--clients", default="1,10,50", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    summary = asyncio.run(main_async(args))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
