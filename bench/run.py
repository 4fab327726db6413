"""Side-by-side HTTP benchmark: a bare Sanic route, Rasa's RestInput and generic channels.

Starts ``bench/server.py`` (one Sanic worker) pinned to one core and drives each route in
turn with wrk pinned to the other, then prints requests/s, p50 and p99 latency and the
server's CPU time per request for each route, and the ratios generic/RestInput and
generic/bare. ``--rasa`` does the same through a real ``rasa run`` serving the demo
assistant (NLU and policies included).

    .venv/bin/python bench/run.py [--seconds 5] [--rounds 3] [--connections 32] [--rasa]
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Tuple

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TELEGRAM_SECRET = "bench-secret-token"

REST_BODY = '{"sender": "user-%d", "message": "hello %d"}'
# Telegram's documented text update; the chat id is the sender, update_id the counter.
TELEGRAM_BODY = (
    '{"message":{"date":1441645532,"chat":{"last_name":"Test Lastname",'
    '"id":%d,"type":"private","first_name":"Test Firstname","username":"Testusername"},'
    '"message_id":1365,"from":{"last_name":"Test Lastname","id":1111111,'
    '"first_name":"Test Firstname","username":"Testusername"},"text":"/start"},"update_id":%d}'
)
# (label, path, body template with two %d: a counter and a sender number, extra headers)
TELEGRAM_HEADERS = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
ROUTES = [
    ("bare Sanic route", "/bare", REST_BODY, {}),
    ("bare, Telegram update", "/bare/telegram", TELEGRAM_BODY, TELEGRAM_HEADERS),
    ("hand-written, Telegram", "/hand/telegram", TELEGRAM_BODY, TELEGRAM_HEADERS),
    ("Rasa RestInput", "/webhooks/rest/webhook", REST_BODY, {}),
    ("generic, rest.yml", "/webhooks/restlike/webhook", REST_BODY, {}),
    ("generic, telegram.yml", "/webhooks/telegram/webhook", TELEGRAM_BODY, TELEGRAM_HEADERS),
    ("generic, telegram, no ids", "/webhooks/telegram_once_off/webhook", TELEGRAM_BODY,
     TELEGRAM_HEADERS),
]  # fmt: skip
RASA_ROUTES = [route for route in ROUTES if route[0] in ("Rasa RestInput", "generic, rest.yml")]
# The project's targets: throughput as a share of RestInput's (and p99 within +10 %).
TARGETS = {"generic, rest.yml": 1.00, "generic, telegram.yml": 0.95}

LUA = """
counter = %d
request = function()
  counter = counter + 1
  local body = string.format('%s', counter %% 1000, counter)
  return wrk.format("POST", nil, {%s}, body)
end
"""


def lua(template: str, headers: Dict[str, str], start: int = 0) -> str:
    """A wrk script posting ``template`` with a sender (counter % 1000) and a new counter.

    Counters start at ``start``: runs on one route must not repeat each other's message ids,
    or the channels that recognise retries would answer those from memory.
    """
    all_headers = {"Content-Type": "application/json", **headers}
    lines = ", ".join(f'["{k}"] = "{v}"' for k, v in all_headers.items())
    return LUA % (start, template.replace("'", "\\'"), lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(core: int, args: List[str]) -> List[str]:
    return ["taskset", "-c", str(core), *args] if shutil.which("taskset") else args


def wait_for(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} did not come up")


def to_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


class Server(NamedTuple):
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User and system CPU time the server has used (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: str, seconds: int, connections: int) -> Tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, requests) of one wrk run; non-2xx answers abort the run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", file.name, url]
    output = subprocess.run(pinned(1, args), capture_output=True, text=True, check=True).stdout
    os.unlink(file.name)
    if "Non-2xx" in output:
        raise SystemExit(f"non-2xx answers from {url}:\n{output}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return rate, p50, p99, requests


def measure(
    server: Server, routes: list, seconds: int, connections: int, rounds: int
) -> Dict[str, tuple]:
    """Per route, the median over ``rounds``: (requests/s, p50 ms, p99 ms, CPU µs per request).

    Routes take turns within each round, so that a slower spell of the machine touches them
    all. CPU time per request is the steadier figure on a shared machine: time the
    hypervisor gives to other guests lowers requests/s but is not the server's CPU time.
    """
    runs: Dict[str, List[tuple]] = {label: [] for label, *_ in routes}
    for round_ in range(rounds):
        for number, (label, path, template, headers) in enumerate(routes):
            # Senders of their own per route: a real assistant's trackers grow with every run.
            template = template.replace("user-%d", f"route{number}-user-%d")
            first_id = round_ * 10**8  # message ids never repeat between runs
            wrk(server.url + path, lua(template, headers, 10**9 + first_id), 1, connections)
            cpu = server.cpu_seconds()
            rate, p50, p99, requests = wrk(
                server.url + path, lua(template, headers, first_id), seconds, connections
            )
            cpu_us = (server.cpu_seconds() - cpu) / requests * 1e6
            runs[label].append((rate, p50, p99, cpu_us))
    return {
        label: tuple(statistics.median(figures) for figures in zip(*results))
        for label, results in runs.items()
    }


def report(title: str, results: Dict[str, tuple]) -> None:
    print(f"\n{title}")
    print(f"{'route':<28}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'CPU µs/req':>12}")
    for label, (rate, p50, p99, cpu_us) in results.items():
        print(f"{label:<28}{rate:>12.0f}{p50:>10.2f}{p99:>10.2f}{cpu_us:>12.1f}")
    rest = results["Rasa RestInput"]
    for label, (rate, _, p99, cpu_us) in results.items():
        if label.startswith(("generic", "hand-written")):
            line = f"{label}: {rate / rest[0]:.2f}x RestInput throughput"
            line += f", p99 {p99 / rest[2]:.2f}x RestInput's"
            line += f", CPU per request {cpu_us / rest[3]:.2f}x RestInput's"
            # Against the bare route with the same body: what the channel itself costs.
            same_body = "bare, Telegram update" if "telegram" in label else "bare Sanic route"
            bare = results.get(same_body)
            if bare:
                line += f", {rate / bare[0]:.2f}x bare"
            if label in TARGETS:
                met = rate / rest[0] >= TARGETS[label] and p99 / rest[2] <= 1.10
                verdict = f"{rate / rest[0]:.3f}x, {'met' if met else 'not met'}"
                line += f" (target >= {TARGETS[label]:.2f}x, p99 <= 1.10x: {verdict})"
            print(line)


@contextmanager
def serving(command: List[str], ready_path: str, cwd: Path = ROOT) -> Iterator[Server]:
    """Run a server on a free port pinned to core 0; yields it once it answers."""
    port = free_port()
    server = subprocess.Popen(
        pinned(0, [*command, str(port)]),
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}{ready_path}")
        # taskset runs the command in its own process: the pid is the server's.
        yield Server(f"http://127.0.0.1:{port}", server.pid)
    finally:
        server.terminate()
        server.wait()


def stub_mode(seconds: int, connections: int, rounds: int) -> None:
    with serving([PYTHON, str(ROOT / "bench" / "server.py")], "/webhooks/rest/") as server:
        results = measure(server, ROUTES, seconds, connections, rounds)
    title = f"Stand-in agent, one Sanic worker, wrk -t1 -c{connections} -d{seconds}s"
    report(f"{title}, median of {rounds} rounds", results)


def rasa_mode(seconds: int, connections: int, rounds: int) -> None:
    model = ROOT / "demo" / "models" / "demo.tar.gz"
    rasa = str(Path(PYTHON).with_name("rasa"))
    if not model.exists():
        print("training the demo assistant (about 20 s)", flush=True)
        trained = subprocess.run(
            [rasa, "train", "--config", "demo/config.yml", "--domain", "demo/domain.yml",
             "--data", "demo/data", "--out", "demo/models", "--fixed-model-name", "demo"],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        if trained.returncode != 0:
            log = trained.stdout[-3000:] + trained.stderr[-3000:]
            raise SystemExit(f"rasa train failed:\n{log}")
    credentials = Path(tempfile.mkdtemp()) / "credentials.yml"
    credentials.write_text(
        "rest:\ngeneric_connector.channels.restlike:\n"
        "  mapping: mappings/rest.yml\n  name: restlike\n"
    )
    command = [rasa, "run", "--model", str(model), "--credentials", str(credentials)]
    with serving([*command, "--enable-api", "--port"], "/status") as server:
        results = measure(server, RASA_ROUTES, seconds, connections, rounds)
    title = f"Real rasa run, demo assistant, wrk -t1 -c{connections} -d{seconds}s"
    report(f"{title}, median of {rounds} rounds", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per route and round")
    parser.add_argument("--rounds", type=int, default=3, help="the routes take turns this often")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rasa", action="store_true", help="also through a real rasa run")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does it)")
    print(f"machine: {os.cpu_count()} cores, {platform_line()}")
    stub_mode(args.seconds, args.connections, args.rounds)
    if args.rasa:
        rasa_mode(args.seconds, args.connections, args.rounds)


def platform_line() -> str:
    import platform

    return f"{platform.platform()}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
