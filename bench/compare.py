"""Two versions of the code side by side: this tree and another checkout, paired rounds.

Starts ``bench/server.py`` of both trees (each with its own code on ``sys.path``), pinned to
the same core, and drives the same routes of each in turn with wrk on the other core: within
each round every route runs on the old server and then on the new one, so a slower spell of
the machine touches both. Prints per route the median CPU time per request and requests/s of
each, the ratio new/old per round and its spread.

    git worktree add /tmp/base <commit>
    .venv/bin/python bench/compare.py /tmp/base [--rounds 5] [--seconds 5]
"""

import argparse
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import PYTHON, ROOT, ROUTES, Server, lua, serving, wrk  # noqa: E402

COMPARED = ("generic, rest.yml", "generic, telegram.yml")


def one_run(server: Server, route: tuple, first_id: int, seconds: int) -> Tuple[float, float]:
    """(requests/s, CPU µs per request) of one measured run after a 1 s warm-up."""
    _, path, template, headers = route
    wrk(server.url + path, lua(template, headers, 10**9 + first_id), 1, 32)
    cpu = server.cpu_seconds()
    rate, _, _, requests = wrk(server.url + path, lua(template, headers, first_id), seconds, 32)
    return rate, (server.cpu_seconds() - cpu) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    routes = [route for route in ROUTES if route[0] in COMPARED]
    runs: Dict[str, Dict[str, List[Tuple[float, float]]]] = {
        route[0]: {"old": [], "new": []} for route in routes
    }
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                serving([PYTHON, str(tree / "bench" / "server.py")], "/webhooks/rest/", cwd=tree)
            )
            for name, tree in (("old", args.old.resolve()), ("new", ROOT))
        }
        for round_ in range(args.rounds):
            for number, route in enumerate(routes):
                for name, server in servers.items():
                    first_id = (round_ * 10 + number) * 10**7
                    runs[route[0]][name].append(one_run(server, route, first_id, args.seconds))
    print(f"\n{args.rounds} paired rounds of {args.seconds} s; old: {args.old}, new: {ROOT}")
    print(f"{'route':<24}{'old µs/req':>12}{'new µs/req':>12}{'new/old':>10}{'spread':>16}")
    for label, by_name in runs.items():
        ratios = [new[1] / old[1] for old, new in zip(by_name["old"], by_name["new"])]
        old_cpu = statistics.median(cpu for _, cpu in by_name["old"])
        new_cpu = statistics.median(cpu for _, cpu in by_name["new"])
        spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
        print(
            f"{label:<24}{old_cpu:>12.1f}{new_cpu:>12.1f}"
            f"{statistics.median(ratios):>10.3f}{spread:>16}"
        )
        old_rate = statistics.median(rate for rate, _ in by_name["old"])
        new_rate = statistics.median(rate for rate, _ in by_name["new"])
        print(f"{'':<24}{old_rate:>12.0f}{new_rate:>12.0f}{new_rate / old_rate:>10.3f}  req/s")


if __name__ == "__main__":
    main()
