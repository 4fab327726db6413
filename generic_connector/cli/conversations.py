"""``generic-connector conversations``: pause and resume the bot for one conversation (handover).

    generic-connector conversations pause CONVERSATION --channel NAME [--timeout SECONDS]
    generic-connector conversations resume CONVERSATION --channel NAME
    generic-connector conversations list --channel NAME [--format text|json]

Every command takes ``--url`` (default: the ``REDIS_URL`` environment variable, else
redis://localhost:6379/0) and ``--prefix`` (default generic_connector), the channel's
``store.url_env`` and ``store.prefix``: the pauses are on Redis, where every replica reads them.
A channel on the memory store keeps its pauses inside its own process, out of this command's
reach: use the HTTP API (``POST /webhooks/<name>/conversations/<id>/pause``) there. A pause
acts on channels with a ``handover`` section; others do not read it.

Exit status: 0 done, 1 ``resume`` of a conversation that was not paused, 2 usage error, 3 Redis
cannot be reached.
"""

import argparse
import asyncio
import json
import os
import time
from typing import Any, Dict
from urllib.parse import urlsplit

from generic_connector.cli import fail
from generic_connector.errors import HTTPError, Unavailable
from generic_connector.handover import operate
from generic_connector.logtext import printable, printable_json
from generic_connector.stores.redis.client import DEFAULT_PREFIX
from generic_connector.stores.redis.state import RedisConversations

DEFAULT_URL = "redis://localhost:6379/0"
NOT_PAUSED = 1
UNREACHABLE = 3
REDIS_SCHEMES = ("redis", "rediss", "unix")


def add_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``conversations`` and its subcommands; each sets ``run``."""
    conversations = subparsers.add_parser(
        "conversations",
        help="pause, resume or list paused conversations of a channel on Redis (handover)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--channel", required=True, help="the channel's name")
    common.add_argument(
        "--url",
        default=os.environ.get("REDIS_URL", DEFAULT_URL),
        help="the Redis URL (default: $REDIS_URL, else %(default)s)",
    )
    common.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix (default %(default)s)")
    common.add_argument("--format", choices=("text", "json"), default="text")
    commands = conversations.add_subparsers(dest="conversations_command", required=True)

    pause = commands.add_parser("pause", parents=[common], help="pause the bot")
    pause.add_argument("conversation", help="the conversation id (the mapped sender)")
    pause.add_argument(
        "--timeout", type=float, help="seconds after which the bot resumes on its own"
    )
    pause.set_defaults(run=run, action="pause")

    resume = commands.add_parser("resume", parents=[common], help="resume the bot")
    resume.add_argument("conversation", help="the conversation id (the mapped sender)")
    resume.set_defaults(run=run, action="resume", timeout=None)

    listing = commands.add_parser("list", parents=[common], help="the paused conversations")
    listing.set_defaults(run=run, action="list", conversation=None, timeout=None)


def run(args: argparse.Namespace) -> int:
    """One subcommand; the exit status."""
    if urlsplit(args.url).scheme not in REDIS_SCHEMES:
        return _usage(
            args,
            f"{args.url!r} is no Redis URL. The memory store keeps pauses inside the channel's "
            "process, out of this command's reach: use the channel's HTTP API there",
        )
    body = b""
    if args.timeout is not None:
        body = json.dumps({"timeout": args.timeout}).encode()
    try:
        answer = asyncio.run(_operate(args, body))
    except HTTPError as error:
        return _usage(args, error.message)
    except Unavailable as error:
        return fail(args, str(error), UNREACHABLE)
    if args.format == "json":
        print(printable_json({"channel": args.channel, **answer}, indent=2))
    else:
        print(_text(args, answer))
    return NOT_PAUSED if answer.get("was_paused") is False else 0


async def _operate(args: argparse.Namespace, body: bytes) -> Dict[str, Any]:
    store = RedisConversations(args.channel, args.url, args.prefix)
    try:
        _, answer = await operate(store, args.action, args.conversation, body, "cli", time.time())
        return answer
    finally:
        await store.close()


def _text(args: argparse.Namespace, answer: Dict[str, Any]) -> str:
    channel = printable(args.channel)
    if args.action == "list":
        lines = [_row(row) for row in answer["paused"]]
        count = len(lines)
        lines.append(f"{count} paused conversation{'' if count == 1 else 's'} of {channel}")
        return "\n".join(lines)
    conversation = printable(args.conversation)
    if args.action == "pause":
        until = answer.get("until")
        lasting = f" until {_when(until)}" if until is not None else " until resumed"
        return f"{channel}: conversation {conversation} paused{lasting}"
    if answer["was_paused"]:
        return f"{channel}: conversation {conversation} resumed"
    return f"{channel}: conversation {conversation} was not paused"


def _row(row: Dict[str, Any]) -> str:
    since = _when(row["since"]) if isinstance(row.get("since"), (int, float)) else "?"
    until = row.get("until")
    lasting = f", until {_when(until)}" if isinstance(until, (int, float)) else ""
    by = printable(str(row.get("by", "?")))
    return f"{printable(row['conversation'])}  paused {since} by {by}{lasting}"


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _usage(args: argparse.Namespace, message: str) -> int:
    return fail(args, message, 2)
