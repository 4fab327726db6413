"""``generic-connector deliveries``: the dead-letter stream of the Redis outbox.

    generic-connector deliveries list [--channel NAME] [--limit N] [--format text|json]
    generic-connector deliveries show ID [--format text|json]
    generic-connector deliveries retry ID... | --all [--channel NAME]
    generic-connector deliveries drop ID...

Every command takes ``--url`` (default: the ``REDIS_URL`` environment variable, else
redis://localhost:6379/0) and ``--prefix`` (default generic_connector). ``list`` and ``show``
print the copy of each request with the secrets masked, never the stored one, and control
characters of what came from a request or a platform escaped (``logtext``). ``retry`` puts
entries back at the end of their conversation's queue, with a new attempt budget, for the
replicas' delivery workers; ``drop`` deletes them.

Exit status: 0 done, 1 an ID that is not in the stream, 2 usage error, 3 Redis cannot be
reached.
"""

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import redis
import redis.exceptions

from generic_connector.cli import fail
from generic_connector.errors import GenericConnectorError
from generic_connector.logtext import printable, printable_json
from generic_connector.stores.redis.client import (
    CONNECT_TIMEOUT,
    DEFAULT_PREFIX,
    SOCKET_TIMEOUT,
    StoreUnavailable,
    dead_key,
)
from generic_connector.stores.redis.queue import REQUEUE

DEFAULT_URL = "redis://localhost:6379/0"
NOT_FOUND = 1
UNREACHABLE = 3
BATCH = 500
# Fields shown by ``show`` (``request``, the stored request with its secrets, never is).
SHOWN_FIELDS = (
    "channel", "conversation", "kind", "entry", "attempts", "status", "problem", "reason",
    "answer", "at",
)  # fmt: skip


def add_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``deliveries`` and its subcommands; each sets ``run`` to a function of the
    parsed arguments that returns the exit status."""
    deliveries = subparsers.add_parser(
        "deliveries",
        help="list, show, retry or drop the requests the Redis outbox could not deliver",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("REDIS_URL", DEFAULT_URL),
        help="the Redis URL (default: $REDIS_URL, else %(default)s)"
        if "REDIS_URL" not in os.environ
        else "the Redis URL (default: $REDIS_URL)",
    )
    common.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix (default %(default)s)")
    commands = deliveries.add_subparsers(dest="deliveries_command", required=True)

    listing = commands.add_parser("list", parents=[common], help="the dead-letter entries")
    listing.add_argument("--channel", help="only this channel's entries")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(run=run_list)

    show = commands.add_parser("show", parents=[common], help="one entry, secrets masked")
    show.add_argument("id", help="the entry's ID, as list prints it")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(run=run_show)

    retry = commands.add_parser("retry", parents=[common], help="deliver entries again")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every entry (of --channel)")
    retry.add_argument("--channel", help="with --all: only this channel's entries")
    retry.set_defaults(run=run_retry)

    drop = commands.add_parser("drop", parents=[common], help="delete entries")
    drop.add_argument("ids", nargs="+", metavar="ID")
    drop.set_defaults(run=run_drop)


# The commands ----------------------------------------------------------------------------------


def _command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command that returns 3 when Redis cannot be reached and 2 for arguments that do not
    go together, with the reason on stderr."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except _Usage as error:
            return fail(args, str(error), 2)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            return fail(args, str(StoreUnavailable(args.url, error)), UNREACHABLE)

    return wrapped


class _Usage(GenericConnectorError):
    pass


@contextlib.contextmanager
def _connection(args: argparse.Namespace) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(
        args.url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
    )
    try:
        yield client
    finally:
        client.close()


@_command
def run_list(args: argparse.Namespace) -> int:
    with _connection(args) as client:
        entries = list(_entries(client, args.prefix, args.channel, args.limit))
    if args.format == "json":
        print(printable_json([shown(entry) for entry in entries], indent=2))
        return 0
    for entry in entries:
        print(summary_line(entry))
    count = len(entries)
    more = " (--limit reached)" if count == args.limit else ""
    print(f"{count} undelivered request{'' if count == 1 else 's'}{more}")
    return 0


@_command
def run_show(args: argparse.Namespace) -> int:
    with _connection(args) as client:
        entry = _entry(client, args.prefix, args.id)
    if entry is None:
        return fail(args, f"no dead-letter entry {args.id}", NOT_FOUND)
    if args.format == "json":
        print(printable_json(shown(entry), indent=2))
        return 0
    print(describe(entry))
    return 0


@_command
def run_retry(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        raise _Usage("give entry IDs or --all, not both or neither")
    if args.channel and not args.all:
        raise _Usage("--channel goes with --all")
    missing: List[str] = []
    done = 0
    with _connection(args) as client:
        script = client.register_script(REQUEUE)  # each back to its own queue
        if args.all:
            ids = [e["id"] for e in _entries(client, args.prefix, args.channel, None)]
        else:
            ids = args.ids
        dead = [dead_key(args.prefix)]
        for entry_id in ids:
            back = _valid_id(entry_id) and script(keys=dead, args=[entry_id, args.prefix])
            if back:
                done += 1
            else:
                missing.append(entry_id)
    for entry_id in missing:
        print(f"no dead-letter entry {entry_id}", file=sys.stderr)
    print(f"{done} request{'' if done == 1 else 's'} back in the outbox")
    return NOT_FOUND if missing else 0


@_command
def run_drop(args: argparse.Namespace) -> int:
    missing: List[str] = []
    done = 0
    with _connection(args) as client:
        for entry_id in args.ids:
            if _valid_id(entry_id) and client.xdel(dead_key(args.prefix), entry_id):
                done += 1
            else:
                missing.append(entry_id)
    for entry_id in missing:
        print(f"no dead-letter entry {entry_id}", file=sys.stderr)
    print(f"{done} request{'' if done == 1 else 's'} dropped")
    return NOT_FOUND if missing else 0


# Reading the stream ----------------------------------------------------------------------------


def _decode(fields: Dict[bytes, bytes]) -> Dict[str, str]:
    return {k.decode(): v.decode("utf-8", errors="replace") for k, v in fields.items()}


def _entries(
    client: redis.Redis, prefix: str, channel: Optional[str], limit: Optional[int]
) -> Iterator[Dict[str, str]]:
    """The stream's entries, oldest first, with their ``id``."""
    start = "-"
    found = 0
    while True:
        batch = client.xrange(dead_key(prefix), min=start, count=BATCH)
        for stream_id, fields in batch:
            entry = {"id": stream_id.decode(), **_decode(fields)}
            if channel is not None and entry.get("channel") != channel:
                continue
            yield entry
            found += 1
            if limit is not None and found >= limit:
                return
        if len(batch) < BATCH:
            return
        start = "(" + batch[-1][0].decode()


def _valid_id(entry_id: str) -> bool:
    millis, _, sequence = entry_id.partition("-")
    return millis.isdigit() and (not sequence or sequence.isdigit())


def _entry(client: redis.Redis, prefix: str, entry_id: str) -> Optional[Dict[str, str]]:
    if not _valid_id(entry_id):
        return None
    found = client.xrange(dead_key(prefix), min=entry_id, max=entry_id)
    if not found:
        return None
    stream_id, fields = found[0]
    return {"id": stream_id.decode(), **_decode(fields)}


# Showing ---------------------------------------------------------------------------------------


def shown(entry: Dict[str, str]) -> Dict[str, Any]:
    """An entry as it may be printed: the masked copy of the request, never the stored one."""
    result: Dict[str, Any] = {"id": entry["id"]}
    for name in SHOWN_FIELDS:
        if name in entry:
            result[name] = entry[name]
    for name in ("attempts", "status"):
        if result.get(name, "").isdigit():
            result[name] = int(result[name])
    try:
        result["request"] = json.loads(entry.get("shown") or "null")
    except ValueError:
        result["request"] = None
    return result


def _when(entry: Dict[str, str]) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry.get("at", ""))))
    except ValueError:
        return "?"


def summary_line(entry: Dict[str, str]) -> str:
    """The line ``list`` prints; the conversation and the problem come from requests and
    platforms' answers: control characters are escaped."""
    return printable(
        f"{entry['id']}  {_when(entry)}  {entry.get('channel', '?')}  "
        f"conversation {entry.get('conversation', '?')}  {entry.get('kind', '?')}  "
        f"{entry.get('attempts', '?')} attempt(s)  {entry.get('problem', '')}"
    )


def describe(entry: Dict[str, str]) -> str:
    """The text ``show`` prints, control characters escaped line by line."""
    data = shown(entry)
    request = data.get("request") or {}
    lines = [
        f"entry         {data['id']} ({_when(entry)})",
        f"channel       {data.get('channel', '?')}",
        f"conversation  {data.get('conversation', '?')}",
        f"kind          {data.get('kind', '?')}",
        f"attempts      {data.get('attempts', '?')} ({data.get('reason', '')})",
        f"last problem  {data.get('problem', '')}",
    ]
    if data.get("status") not in (None, ""):
        lines.append(f"last answer   HTTP {data['status']}: {data.get('answer', '')}")
    lines.append(f"request       {request.get('method', '?')} {request.get('url', '?')}")
    for name, value in (request.get("headers") or {}).items():
        lines.append(f"  {name}: {value}")
    if request.get("body") is not None:
        lines.append(f"body          {request['body']}")
    return "\n".join(printable(line) for line in lines)
