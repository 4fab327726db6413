"""Profile the benchmark server under load with py-spy: where a request's time goes.

Starts ``bench/server.py`` pinned to one core (with the stand-in platform API, as
``bench/run.py`` does), drives one route with wrk from the other, and samples the server with
py-spy meanwhile; prints the lines with the most own time and the channel's (and Rasa's)
lines by time spent in them and below, as shares of all samples. ``telegram-api`` (the
default) is the generic channel with ``mappings/telegram.yml`` delivering its replies to the
stand-in Bot API: the outbound path; ``rasa-telegram`` is Rasa's ``TelegramInput`` doing the
same (with the benchmark's loop fix).

    .venv/bin/python bench/profile_server.py [telegram-api|rasa-telegram|rest|restlike|telegram]
        [--seconds 8]

(``make profile`` installs py-spy first.) Sampling slows the server down a little; the
shares, not the request rate, are the result.
"""

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Counter, Tuple

from run import PYTHON, bench_server, peer_routes, pinned, stub_routes, wrk

LABELS = {
    "telegram-api": "Telegram, generic",
    "rasa-telegram": "Telegram, Rasa",
    "rest": "Rasa RestInput",
    "restlike": "generic, rest.yml",
    "telegram": "generic, telegram.yml",
}
ROUTE_OF = {
    name: next(r for r in stub_routes() + peer_routes() if r.label == label)
    for name, label in LABELS.items()
}
OURS = ("generic_connector", "rasa/", "aiohttp/", "aiogram/")


def shares(raw: Path) -> Tuple[Counter[str], Counter[str], int]:
    """(own samples per frame, samples per frame and below, all samples) of py-spy's raw output."""
    own: Counter[str] = collections.Counter()
    below: Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, samples = stack.split(";"), int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            below[frame] += samples
    return own, below, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("route", nargs="?", default="telegram-api", choices=sorted(ROUTE_OF))
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: make profile installs it")
    route = ROUTE_OF[args.route]
    raw = Path(tempfile.mkdtemp()) / "profile.txt"
    with bench_server() as (server, api):
        url = server.url + route.path
        wrk(url, route.script(10**9), 2, 32)  # warm-up
        api.settle()
        record = subprocess.Popen(
            pinned(1, [spy, "record", "-r", "500", "-d", str(args.seconds), "-f", "raw",
                       "-o", str(raw), "--pid", str(server.pid)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        rate, *_ = wrk(url, route.script(0), args.seconds + 1, 32)
        record.wait()
    own, below, total = shares(raw)
    print(f"{route.label}: {rate:.0f} requests/s while sampled, {total} samples")
    print("\nown time (the line itself)")
    for frame, samples in own.most_common(args.top):
        print(f"{samples / total:6.1%}  {frame}")
    print("\nthe channel's, Rasa's and the HTTP clients' lines, with what they call")
    mine = [(frame, samples) for frame, samples in below.most_common() if any(
        part in frame for part in OURS)]  # fmt: skip
    for frame, samples in mine[: args.top]:
        print(f"{samples / total:6.1%}  {frame}")


if __name__ == "__main__":
    sys.exit(main())
