"""Side-by-side HTTP benchmark: Rasa's own connectors, Rasa's RestInput and generic channels.

Starts the stand-in platform API (``bench/standin_api.py``) pinned to core 1 and
``bench/server.py`` (one Sanic worker, the stand-in agent) pinned to core 0, and drives each
route with wrk pinned to core 1 (the stand-in API shares that core). The routes:

- the stand-in routes of ``bench/server.py``: a bare Sanic route, a hand-written Telegram
  webhook, Rasa's ``RestInput``, the generic channel with ``mappings/rest.yml`` and with
  ``mappings/telegram.yml`` without its outbound section (no Bot API call);
- the peer routes of ``bench/peers.py``: for Telegram, Slack, Twilio, Messenger, Mattermost and
  Rocket.Chat, Rasa's own connector and the generic channel with the shipped mapping, each
  given the platform's documented webhook payload, signed per request, and replying to the
  stand-in API, or in the answer where that is the platform's own way.

Every route runs once per round (1 s warm-up, then ``--seconds``), pairs side by side and
their order swapped every other round, over ``--rounds`` rounds (at least 5). Per route it
prints the medians of requests/s, p50 and p99 latency, the server's CPU time per request
(user + system, from the start of the run until the replies it caused are delivered) and the
replies delivered per second (counted at the stand-in API during the run; for replies in
the answer, the answers). Per platform it prints the ratios generic / Rasa of each round, their
median and spread (min-max), and the verdicts against the targets. ``--rasa`` then compares
``RestInput`` and ``rest.yml`` through a real ``rasa run`` serving the demo assistant.

    .venv/bin/python bench/run.py [--seconds 5] [--rounds 5] [--connections 32] [--rasa]
"""

import argparse
import json
import os
import platform
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
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
PYTHON = sys.executable
TELEGRAM_SECRET = "bench-secret-token"

import peers  # noqa: E402

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
# Side by side in each round; the order within a group is swapped every other round.
STUB_GROUPS = [
    ["bare Sanic route", "bare, Telegram update"],
    ["Rasa RestInput", "generic, rest.yml"],
    ["hand-written, Telegram", "generic, telegram.yml", "generic, telegram, no ids"],
]

# The targets. Per platform, generic / Rasa's connector: delivered replies/s at least 1.5x,
# CPU per request at most 0.67x, p99 no worse. Against RestInput (CPU per request): rest.yml
# at most 1.03x, the Telegram route delivering through the stand-in Bot API at most 5x.
PEER_DELIVERED, PEER_CPU, PEER_P99 = 1.5, 0.67, 1.00
REST_CPU, TELEGRAM_API_CPU = 1.03, 5.0

LUA = """
counter = %d
request = function()
  counter = counter + 1
  local body = string.format('%s', counter %% 1000, counter)
  return wrk.format("POST", nil, {%s}, body)
end
"""
# Appended for the check before the rounds: the first answer's status and body.
LUA_FIRST_ANSWER = """
local shown = false
response = function(status, headers, body)
  if not shown then
    shown = true
    io.write("FIRST-STATUS ", status, "\\nFIRST-BODY ", body:sub(1, 300):gsub("\\n", " "), "\\n")
  end
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


class Route(NamedTuple):
    label: str
    path: str
    script: Callable[[int], str]  # the wrk script, its counter starting at the argument
    delivered: Optional[str] = None  # the stand-in API path that counts its replies
    work: str = ""


def stub_routes() -> List[Route]:
    routes = []
    for number, (label, path, template, headers) in enumerate(ROUTES):
        # Senders of their own per route: a real assistant's trackers grow with every run.
        template = template.replace("user-%d", f"route{number}-user-%d")
        routes.append(Route(label, path, lambda start, t=template, h=headers: lua(t, h, start)))
    return routes


def peer_routes() -> List[Route]:
    return [
        Route(peer.label, peer.path, lambda start, b=peer.build: peers.lua(b, start),
              peer.delivered, peer.short)
        for peer in [*peers.PEERS, peers.SHIPPED_TELEGRAM]
    ]  # fmt: skip


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


class WrkRun(NamedTuple):
    rate: float
    p50: float
    p99: float
    requests: int
    seconds: float
    failed: int  # non-2xx answers and socket errors
    output: str


def wrk_run(url: str, script: str, seconds: int, connections: int) -> WrkRun:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", file.name, url]
    try:
        output = subprocess.run(pinned(1, args), capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(file.name)
    requests, took = re.search(r"(\d+) requests in (\S+),", output).groups()
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output)  # fmt: skip
    failed = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(n) for n in sockets.groups()) if sockets else 0
    )
    return WrkRun(
        float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        to_ms(re.search(r"\s50%\s+(\S+)", output).group(1)),
        to_ms(re.search(r"\s99%\s+(\S+)", output).group(1)),
        int(requests),
        to_ms(took) / 1000,
        failed,
        output,
    )


def wrk(url: str, script: str, seconds: int, connections: int) -> Tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, requests) of one wrk run; non-2xx answers abort the run."""
    run = wrk_run(url, script, seconds, connections)
    if "Non-2xx" in run.output:
        raise SystemExit(f"non-2xx answers from {url}:\n{run.output}")
    return run.rate, run.p50, run.p99, run.requests


class StandInAPI(NamedTuple):
    url: str

    def counts(self) -> Dict[str, int]:
        with urllib.request.urlopen(self.url + "/_counts", timeout=10) as answer:
            return json.loads(answer.read())

    def settle(self, quiet: float = 0.5, limit: float = 180.0) -> None:
        """Wait until no request has arrived for ``quiet`` seconds (deliveries done)."""
        deadline = time.monotonic() + limit
        last, since = sum(self.counts().values()), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            total = sum(self.counts().values())
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return


class Figures(NamedTuple):
    rate: float  # requests/s
    p50: float  # ms
    p99: float  # ms
    cpu_us: float  # server CPU per request
    delivered: float  # replies/s
    failed: int


def one_run(
    server: Server, api: Optional[StandInAPI], route: Route, first_id: int, seconds: int,
    connections: int,
) -> Figures:  # fmt: skip
    """One measured run after a 1 s warm-up; CPU time counts until its replies are out."""
    url = server.url + route.path
    wrk_run(url, route.script(10**9 + first_id), 1, connections)
    if api is not None and route.delivered:
        api.settle()
    before = api.counts() if api is not None and route.delivered else {}
    cpu = server.cpu_seconds()
    run = wrk_run(url, route.script(first_id), seconds, connections)
    if api is not None and route.delivered:
        at_end = api.counts()
        api.settle()
        replies = at_end.get(route.delivered, 0) - before.get(route.delivered, 0)
    else:
        replies = run.requests - run.failed
    cpu_us = (server.cpu_seconds() - cpu) / max(run.requests, 1) * 1e6
    return Figures(run.rate, run.p50, run.p99, cpu_us, replies / run.seconds, run.failed)


def measure(
    server: Server, api: Optional[StandInAPI], routes: List[Route], groups: List[List[str]],
    seconds: int, connections: int, rounds: int,
) -> Dict[str, List[Figures]]:  # fmt: skip
    """Every route's figures, one per round. Routes take turns within each round, the routes
    of a group one after the other and their order swapped every other round, so that a
    slower spell of the machine touches them all alike."""
    by_label = {route.label: route for route in routes}
    runs: Dict[str, List[Figures]] = {label: [] for group in groups for label in group}
    for round_ in range(rounds):
        started = time.monotonic()
        for group in groups:
            for label in group if round_ % 2 == 0 else reversed(group):
                first_id = round_ * 10**8  # message ids never repeat between runs
                runs[label].append(
                    one_run(server, api, by_label[label], first_id, seconds, connections)
                )
        print(f"  round {round_ + 1} of {rounds}: {time.monotonic() - started:.0f} s", flush=True)
    return runs


def median_figures(results: List[Figures]) -> Figures:
    return Figures(*(statistics.median(values) for values in zip(*results)))


def ratios(
    runs: Dict[str, List[Figures]], new: str, old: str, field: str
) -> Tuple[float, float, float]:
    """(median, min, max) over the rounds of ``new``'s figure / ``old``'s, round by round."""
    each = [
        getattr(a, field) / getattr(b, field) if getattr(b, field) else float("inf")
        for a, b in zip(runs[new], runs[old])
    ]
    return statistics.median(each), min(each), max(each)


def spread(values: Tuple[float, float, float]) -> str:
    return f"{values[0]:.2f}x ({values[1]:.2f}-{values[2]:.2f})"


def check(met: bool) -> str:
    return "met" if met else "NOT met"


def report_stub(runs: Dict[str, List[Figures]], rounds: int, title: str) -> None:
    print(f"\n{title}")
    print(f"{'route':<28}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'CPU µs/req':>12}")
    for label, results in runs.items():
        rate, p50, p99, cpu_us, *_ = median_figures(results)
        print(f"{label:<28}{rate:>12.0f}{p50:>10.2f}{p99:>10.2f}{cpu_us:>12.1f}")
    print(f"generic / RestInput, median of {rounds} paired rounds (min-max):")
    rest = "Rasa RestInput"
    for label in runs:
        if not label.startswith(("generic", "hand-written")):
            continue
        line = (
            f"  {label}: CPU per request {spread(ratios(runs, label, rest, 'cpu_us'))}, "
            f"throughput {spread(ratios(runs, label, rest, 'rate'))}, "
            f"p99 {spread(ratios(runs, label, rest, 'p99'))}"
        )
        if label == "generic, rest.yml":
            cpu = ratios(runs, label, rest, "cpu_us")[0]
            line += f"; target CPU <= {REST_CPU:.2f}x: {check(cpu <= REST_CPU)}"
        print(line)


def report_peers(runs: Dict[str, List[Figures]], rounds: int, title: str) -> None:
    print(f"\n{title}")
    header = f"{'route':<22}{'work done':<34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    print(header + f"{'CPU µs/req':>12}{'delivered/s':>13}{'failed':>8}")
    for peer in peers.PEERS:
        rate, p50, p99, cpu_us, delivered, failed = median_figures(runs[peer.label])
        print(
            f"{peer.label:<22}{peer.short:<34}{rate:>8.0f}{p50:>9.2f}{p99:>9.2f}"
            f"{cpu_us:>12.1f}{delivered:>13.0f}{failed:>8.0f}"
        )
    print(f"\ngeneric / Rasa's connector, median of {rounds} paired rounds (min-max); targets: "
          f"delivered/s >= {PEER_DELIVERED}x, CPU per request <= {PEER_CPU}x, "
          f"p99 <= {PEER_P99:.2f}x")  # fmt: skip
    for name in dict.fromkeys(peer.platform for peer in peers.PEERS):
        new, old = f"{name}, generic", f"{name}, Rasa"
        delivered = ratios(runs, new, old, "delivered")
        cpu = ratios(runs, new, old, "cpu_us")
        p99 = ratios(runs, new, old, "p99")
        met = delivered[0] >= PEER_DELIVERED and cpu[0] <= PEER_CPU and p99[0] <= PEER_P99
        print(
            f"  {name + ':':<13}delivered/s {spread(delivered)}, CPU/request {spread(cpu)}, "
            f"p99 {spread(p99)}, requests/s {spread(ratios(runs, new, old, 'rate'))}: "
            f"{check(met)}"
        )
    telegram = ratios(runs, "Telegram, generic", "Rasa RestInput", "cpu_us")
    print(
        f"  telegram.yml delivering through the stand-in Bot API: CPU per request "
        f"{spread(telegram)} RestInput's; target <= {TELEGRAM_API_CPU:.0f}x: "
        f"{check(telegram[0] <= TELEGRAM_API_CPU)}"
    )
    print("\nwork done per route:")
    for peer in peers.PEERS:
        print(f"  {peer.label}: {peer.work}")


def first_answers(server: Server, api: StandInAPI, routes: List[Route]) -> Dict[str, str]:
    """Each peer route for one second over one connection: its first answer and whether
    replies arrived. Stops the benchmark when a route that is to be measured does not work."""
    findings, broken = {}, []
    for route in routes:
        before = api.counts()
        run = wrk_run(server.url + route.path, route.script(2 * 10**9) + LUA_FIRST_ANSWER, 1, 1)
        api.settle()
        after = api.counts()
        status = re.search(r"FIRST-STATUS (\d+)", run.output).group(1)
        body = re.search(r"FIRST-BODY ?(.*)", run.output).group(1)
        if route.delivered:
            replies = after.get(route.delivered, 0) - before.get(route.delivered, 0)
            calls = sum(after.values()) - sum(before.values())
            seen = f"{replies} replies for {run.requests} requests ({calls} API calls)"
            works = status.startswith("2") and replies >= run.requests > 0
        else:
            seen = f"{run.requests} answers"
            works = status.startswith("2") and "Hello!" in body
        findings[route.label] = f"HTTP {status} {body[:90]!r}; {seen}"
        if not works and route.label != peers.SHIPPED_TELEGRAM.label:
            broken.append(route.label)
    for label, finding in findings.items():
        print(f"  {label}: {finding}")
    if broken:
        raise SystemExit(f"these routes do not work, nothing measured: {', '.join(broken)}")
    return findings


@contextmanager
def serving(
    command: List[str], ready_path: str, cwd: Path = ROOT, env: Optional[Dict[str, str]] = None,
    core: int = 0,
) -> Iterator[Server]:  # fmt: skip
    """Run a server on a free port pinned to ``core``; yields it once it answers."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            pinned(core, [*command, str(port)]),
            cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
        try:
            try:
                wait_for(f"http://127.0.0.1:{port}{ready_path}")
            except SystemExit:  # show why
                log.seek(0)
                print(log.read().decode(errors="replace")[-3000:], file=sys.stderr)
                raise
            # taskset runs the command in its own process: the pid is the server's.
            yield Server(f"http://127.0.0.1:{port}", server.pid)
        finally:
            server.terminate()
            server.wait()


@contextmanager
def stand_in_api() -> Iterator[StandInAPI]:
    """The stand-in platform API, pinned to core 1 with wrk."""
    command = [PYTHON, str(ROOT / "bench" / "standin_api.py")]
    with serving(command, "/_counts", core=1) as api:
        yield StandInAPI(api.url)


@contextmanager
def bench_server(channels: int = 1) -> Iterator[Tuple[Server, StandInAPI]]:
    """``bench/server.py`` with the peer routes, replying to a stand-in API."""
    with stand_in_api() as api:
        command = [PYTHON, str(ROOT / "bench" / "server.py")]
        if channels != 1:
            command = [*command, str(channels)]
        with serving(command, "/webhooks/rest/", env={"BENCH_API_URL": api.url}) as server:
            yield server, api


def stub_and_peer_mode(seconds: int, connections: int, rounds: int) -> None:
    routes = stub_routes() + peer_routes()
    groups = STUB_GROUPS + [
        [f"{name}, Rasa", f"{name}, generic"]
        for name in dict.fromkeys(peer.platform for peer in peers.PEERS)
    ]
    with bench_server() as (server, api):
        print("\nFirst answer of each peer route (1 s, one connection):")
        findings = first_answers(server, api, peer_routes())
        print(f"\nMeasuring {sum(map(len, groups))} routes, {rounds} rounds of "
              f"{seconds + 1} s each (and deliveries' tails)", flush=True)  # fmt: skip
        runs = measure(server, api, routes, groups, seconds, connections, rounds)
    title = f"one Sanic worker, stand-in agent, wrk -t1 -c{connections} -d{seconds}s"
    stub = {label: runs[label] for group in STUB_GROUPS for label in group}
    report_stub(stub, rounds, f"Stand-in routes ({title}), median of {rounds} rounds")
    report_peers(runs, rounds, f"Peer routes ({title}), median of {rounds} rounds")
    shipped = findings[peers.SHIPPED_TELEGRAM.label]
    print(f"\nRasa's TelegramInput as shipped (Bot API URL at the stand-in only): {shipped}")


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
    labels = [label for label, *_ in RASA_ROUTES]
    routes = [route for route in stub_routes() if route.label in labels]
    with serving([*command, "--enable-api", "--port"], "/status") as server:
        runs = measure(server, None, routes, [labels], seconds, connections, rounds)
    title = f"Real rasa run, demo assistant, wrk -t1 -c{connections} -d{seconds}s"
    report_stub(runs, rounds, f"{title}, median of {rounds} rounds")


def machine() -> str:
    from importlib.metadata import version

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine(),
    )  # fmt: skip
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    return (
        f"{os.cpu_count()} cores ({model}), {platform.platform()}, "
        f"Python {platform.python_version()}, Rasa {version('rasa')}, "
        f"Sanic {version('sanic')}, wrk {wrk_version[1] if len(wrk_version) > 1 else '?'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per route and round")
    parser.add_argument("--rounds", type=int, default=5, help="the routes take turns this often")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rasa", action="store_true", help="also through a real rasa run")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does it)")
    if args.rounds < 5:
        print(f"note: {args.rounds} rounds; the verdicts are meant for at least 5")
    print(f"machine: {machine()}")
    stub_and_peer_mode(args.seconds, args.connections, args.rounds)
    if args.rasa:
        rasa_mode(args.seconds, args.connections, args.rounds)


if __name__ == "__main__":
    main()
