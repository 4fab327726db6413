"""A fixed-rate HTTP load: requests sent on a schedule, latency counted from the schedule.

wrk keeps a fixed number of requests in flight, so a slow answer delays the requests behind
it and hides itself (coordinated omission). Here request ``i`` is due at ``start + i / rate``
whatever the answers do; its latency runs from when it was due until its answer has arrived,
so time spent waiting for a free connection counts too. One process, one event loop, up to
``--connections`` keep-alive connections. Prints one JSON line: requests, answers by status,
latency percentiles (ms) and the rate achieved.

    .venv/bin/python bench/fixed_rate.py URL --rate 1000 --seconds 10 --body-template T \
        [--header 'Name: value'] [--connections 64]

``T`` holds ``{n}`` (the request's number, from ``--start``) and ``{s}`` (``n % 1000``).
"""

import argparse
import asyncio
import json
import statistics
import time
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit


def request_bytes(host: str, path: str, headers: Dict[str, str], body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode() + b"\r\n" + body


async def read_answer(reader: asyncio.StreamReader) -> int:
    """The status of one HTTP/1.1 answer with a Content-Length, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(
    url: str, rate: float, seconds: float, connections: int, template: str,
    headers: Dict[str, str], start: int,
) -> Tuple[List[float], Dict[int, int], float]:  # fmt: skip
    """(latencies in s, answers by status, seconds the schedule took) of one run."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    due: asyncio.Queue[Optional[Tuple[float, bytes]]] = asyncio.Queue()
    latencies: List[float] = []
    statuses: Dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                item = await due.get()
                if item is None:
                    return
                scheduled, payload = item
                writer.write(payload)
                status = await read_answer(reader)
                latencies.append(time.perf_counter() - scheduled)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    workers = [asyncio.ensure_future(connection()) for _ in range(connections)]
    total = int(rate * seconds)
    # perf_counter, not the loop's clock: uvloop's counts whole milliseconds.
    began = time.perf_counter()
    for number in range(total):
        scheduled = began + number / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        n = start + number
        body = template.replace("{n}", str(n)).replace("{s}", str(n % 1000)).encode()
        due.put_nowait((scheduled, request_bytes(host, parts.path, headers, body)))
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, statuses, time.perf_counter() - began


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--body-template", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args()
    headers = {"Content-Type": "application/json"}
    for line in args.header:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.monotonic()
    latencies, statuses, took = asyncio.run(
        load(args.url, args.rate, args.seconds, args.connections, args.body_template,
             headers, args.start)
    )  # fmt: skip
    ms = [latency * 1000 for latency in latencies]
    print(json.dumps({
        "requests": len(ms),
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "rate": round(len(ms) / max(took, 1e-9), 1),
        "wall_s": round(time.monotonic() - started, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
