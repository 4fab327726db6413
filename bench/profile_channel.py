"""Profile the generic channel's request handling in-process (no HTTP), with cProfile.

    .venv/bin/python bench/profile_channel.py [rest|telegram] [REQUESTS]

Prints the top entries by own time: what a request costs besides Sanic and Rasa.
"""

import asyncio
import cProfile
import json
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import ROOT, StandInAgent, load_channel, telegram_channel  # noqa: E402

from generic_connector.channel import GenericChannel  # noqa: E402
from generic_connector.request import IncomingRequest  # noqa: E402


def requests(kind: str, count: int) -> list:
    if kind == "telegram":
        update = json.loads((ROOT / "tests/payloads/telegram/message.json").read_text())
        made = []
        for n in range(count):
            update["update_id"] = n
            update["message"]["chat"]["id"] = n % 1000
            headers = {"Content-Type": "application/json",
                       "X-Telegram-Bot-Api-Secret-Token": "bench-secret-token"}  # fmt: skip
            made.append(IncomingRequest.from_parts(json.dumps(update).encode(), headers))
        return made
    body = '{"sender": "user-%d", "message": "hello %d"}'
    headers = {"Content-Type": "application/json"}
    return [
        IncomingRequest.from_parts((body % (n % 1000, n)).encode(), headers) for n in range(count)
    ]


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "rest"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    if kind == "telegram":
        channel = telegram_channel()
    else:
        channel = GenericChannel(load_channel({"mapping": str(ROOT / "mappings/rest.yml")}))
    agent = StandInAgent()
    made = requests(kind, count)

    async def run() -> None:
        for request in made:
            answer = await channel.process(request, agent.handle_message, agent)
            assert answer.status == 200, answer.body

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run())
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"{kind}: {count} requests, {stats.total_tt / count * 1e6:.1f} µs each (profiled)")
    stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
