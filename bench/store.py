"""The shared store's cost: telegram.yml on Redis against in memory, and early acknowledgement.

Starts a local ``redis-server``, the stand-in Bot API and ``bench/server.py`` with the store
channels (``store_channels()``: ``telegram.yml`` delivering every reply to the stand-in).

1. **Redis against memory**: ``store_memory`` and ``store_redis`` (de-duplication and the
   outbox in Redis) driven by wrk in turns over paired rounds; the server's CPU time per
   request counts until the replies are delivered. Target: Redis at most 1.6x memory. Then
   the Redis round trips and commands per handled message, from the server's ``/metrics``
   (``generic_connector_redis_round_trips_total``), at wrk's 32 connections (target: at most
   2) and at one.
2. **Early acknowledgement**: ``store_early`` (``request.ack: early``; the stand-in agent takes
   2 s per message) under a fixed rate of 1,000 requests/s (``bench/fixed_rate.py``, latency
   counted from each request's due time). Target: webhook p99 at most 20 ms.

    .venv/bin/python bench/store.py [--seconds 5] [--rounds 5] [--rate 1000]
"""

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from run import (  # noqa: E402
    PYTHON,
    ROOT,
    Route,
    check,
    machine,
    measure,
    median_figures,
    pinned,
    ratios,
    serving,
    spread,
    stand_in_api,
    wrk_run,
)

sys.path.insert(0, str(ROOT))
from tests.redis_server import RedisServer  # noqa: E402

REDIS_CPU = 1.6  # at most, Redis / memory, CPU per request
ROUND_TRIPS = 2.0  # at most, Redis round trips per handled message
OPS_TOKEN = "bench-ops-token"
EARLY_P99_MS = 20.0  # at most, at EARLY_RATE with a 2 s agent
TOKEN = peers.SECRETS["TELEGRAM_BOT_TOKEN"]


def route(kind: str) -> Route:
    return Route(
        f"telegram.yml, {kind}",
        f"/webhooks/store_{kind}/webhook",
        lambda start: peers.lua(peers.TELEGRAM, start),
        f"/store_{kind}/bot{TOKEN}/sendMessage",
    )


def early_ack(url: str, rate: float, seconds: int) -> dict:
    """One fixed-rate run against the early acknowledging channel, pinned beside the API."""
    template = peers.TELEGRAM_BODY.replace("%d", "{n}", 1).replace("%d", "{s}", 1)
    secret = peers.SECRETS["TELEGRAM_SECRET_TOKEN"]
    command = [
        PYTHON, str(ROOT / "bench" / "fixed_rate.py"), url, "--rate", str(rate),
        "--seconds", str(seconds), "--body-template", template,
        "--header", f"X-Telegram-Bot-Api-Secret-Token: {secret}", "--start", str(5 * 10**9),
    ]  # fmt: skip
    done = subprocess.run(pinned(1, command), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def redis_counts(server_url: str) -> Tuple[int, int]:
    """(round trips, commands) the server has sent Redis so far, from its /metrics."""
    request = urllib.request.Request(
        server_url + "/webhooks/store_redis/metrics",
        headers={"Authorization": f"Bearer {OPS_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    found = dict(re.findall(r"^generic_connector_redis_(\w+)_total (\S+)$", text, re.M))
    return int(float(found.get("round_trips", 0))), int(float(found.get("commands", 0)))


def count_round_trips(server, api, connections: int, seconds: int) -> Tuple[float, float]:
    """Redis round trips and commands per handled message on the Redis route, over one wrk
    run at ``connections`` (after a warm-up), until its replies are delivered."""
    redis_route = route("redis")
    url = server.url + redis_route.path
    wrk_run(url, redis_route.script(7 * 10**9 + connections * 10**7), 1, connections)
    api.settle()
    trips, commands = redis_counts(server.url)
    run = wrk_run(url, redis_route.script(8 * 10**9 + connections * 10**7), seconds, connections)
    api.settle()
    after_trips, after_commands = redis_counts(server.url)
    handled = max(run.requests - run.failed, 1)
    return (after_trips - trips) / handled, (after_commands - commands) / handled


def pin(pid: int, core: int) -> None:
    """Keep ``pid`` on ``core`` (redis-server beside wrk and the stand-in API, the far side)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {core})


ROUND_TRIP = """
import asyncio, sys, time
import redis.asyncio as aioredis
from generic_connector.stores.redis.client import new_pool

async def main():
    client = aioredis.Redis(connection_pool=new_pool(sys.argv[1]))
    await client.set("bench:warm", "1")
    started = time.process_time()
    for number in range(3000):
        await client.set(f"bench:{number % 100}", "1", px=30000)
    print((time.process_time() - started) / 3000 * 1e6)

asyncio.run(main())
"""


def round_trip_us(url: str, core: int) -> float:
    """CPU time one redis-py command costs the client pinned to ``core``: what every round
    trip of the store and the outbox costs the server."""
    command = pinned(core, [PYTHON, "-c", ROUND_TRIP, url])
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    redis = RedisServer()
    redis.start()
    pin(redis.process.pid, 1)
    try:
        far, near = round_trip_us(redis.url, 0), round_trip_us(redis.url, 1)
        with stand_in_api() as api:
            env = {
                "BENCH_API_URL": api.url,
                "BENCH_REDIS_URL": redis.url,
                "GENERIC_CONNECTOR_OPS_TOKEN": OPS_TOKEN,
            }
            command = [PYTHON, str(ROOT / "bench" / "server.py")]
            with serving(command, "/webhooks/rest/", env=env) as server:
                routes = [route("memory"), route("redis")]
                labels = [r.label for r in routes]
                runs = measure(
                    server, api, routes, [labels], args.seconds, args.connections, args.rounds
                )
                trips = {
                    c: count_round_trips(server, api, c, args.seconds)
                    for c in (args.connections, 1)
                }
                cpu = server.cpu_seconds()
                early = early_ack(server.url + "/webhooks/store_early/webhook", args.rate, 10)
                early["cpu_us"] = (server.cpu_seconds() - cpu) / early["requests"] * 1e6
    finally:
        redis.stop()
    title = f"wrk -t1 -c{args.connections} -d{args.seconds}s, median of {args.rounds} rounds"
    print(f"\nOne Sanic worker, stand-in agent, replies to the stand-in Bot API ({title})")
    print(f"{'route':<24}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}"
          f"{'delivered/s':>13}")  # fmt: skip
    for label in labels:
        rate, p50, p99, cpu_us, delivered, _ = median_figures(runs[label])
        print(f"{label:<24}{rate:>8.0f}{p50:>9.2f}{p99:>9.2f}{cpu_us:>12.1f}{delivered:>13.0f}")
    cpu = ratios(runs, labels[1], labels[0], "cpu_us")
    print(
        f"Redis / memory: CPU per request {spread(cpu)}, "
        f"delivered/s {spread(ratios(runs, labels[1], labels[0], 'delivered'))}; "
        f"target CPU <= {REDIS_CPU:.2f}x: {check(cpu[0] <= REDIS_CPU)}"
    )
    for connections, (per_message, commands) in trips.items():
        target = (
            f"; target <= {ROUND_TRIPS:.0f}: {check(per_message <= ROUND_TRIPS)}"
            if connections == args.connections
            else " (one request at a time: nothing to share a round trip with)"
        )
        print(
            f"Redis round trips per handled message at {connections} connection(s): "
            f"{per_message:.2f} ({commands:.2f} commands){target}"
        )
    print(
        f"One Redis command costs its client {far:.0f} µs of CPU here with redis-server on the "
        f"other core (as in these runs), {near:.0f} µs on the same core: waking a process on "
        "another core is dear on this machine."
    )
    print(
        f"\nEarly acknowledgement, agent taking 2 s per message, {args.rate:.0f} requests/s "
        f"for 10 s (fixed rate): {early['requests']} requests, answers {early['statuses']}, "
        f"p50 {early['p50_ms']} ms, p99 {early['p99_ms']} ms, max {early['max_ms']} ms, "
        f"{early['rate']} requests/s achieved, server CPU {early['cpu_us']:.0f} µs per "
        f"request; target p99 <= {EARLY_P99_MS:.0f} ms: "
        f"{check(early['p99_ms'] <= EARLY_P99_MS and set(early['statuses']) == {'200'})}"
    )


if __name__ == "__main__":
    main()
