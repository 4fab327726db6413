"""Onboarding commands: ``generic-connector capture`` and ``generic-connector new``.

``capture`` records what a platform sends as mapping test cases; ``new`` turns such a
capture (or a payload file) into a starter mapping that passes ``generic-connector validate``.
``add_commands`` registers both on the command line's subparsers.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from generic_connector import defaults
from generic_connector.cli.capture import (
    DEFAULT_MAX_REQUESTS,
    DEFAULT_PORT,
    REDACTED,
    CaptureSettings,
)
from generic_connector.cli.capture import run as run_capture
from generic_connector.cli.starter import (
    NothingToGuess,
    StarterError,
    build,
    channel_name,
    load_source,
    write_checked,
)


def add_commands(subparsers: Any) -> None:
    """Register ``capture`` and ``new`` on an ``add_subparsers()`` object."""
    capture = subparsers.add_parser(
        "capture",
        help="record the requests a platform sends, as mapping test cases",
        description="Serve any method and path, answer 200 {} (or --answer), and write each "
        "request to DIR as NNNN-<method>-<path>.json: a mapping test case with an empty expect "
        "to fill in, or to give to `generic-connector new --from`. Verification challenges "
        "(hub.challenge in a GET, Slack's url_verification) are answered, so a platform "
        "accepts the URL. Runs until Ctrl-C (or --count). Exit status: 0 stopped, 1 cannot "
        "listen or create DIR.",
    )
    capture.add_argument(
        "--port",
        type=_count(0),
        default=DEFAULT_PORT,
        help=f"the port to listen on (default {DEFAULT_PORT}, as rasa run; 0 picks a free one)",
    )
    capture.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    capture.add_argument(
        "--out",
        type=Path,
        default=Path("captured"),
        metavar="DIR",
        help="where the test cases go (default captured/; numbering continues after the "
        "files already there)",
    )
    capture.add_argument(
        "--answer",
        default="{}",
        metavar="TEXT",
        help="the body of every answer (default {}); JSON is sent as application/json, "
        "anything else as text/plain",
    )
    capture.add_argument(
        "--max-body",
        type=_count(0),
        default=defaults.MAX_BODY,
        metavar="BYTES",
        help=f"larger bodies are refused with 413 and not recorded (default {defaults.MAX_BODY})",
    )
    capture.add_argument(
        "--max-requests",
        type=_count(0),
        default=DEFAULT_MAX_REQUESTS,
        metavar="N",
        help="record at most N requests; later ones are answered but not written "
        f"(default {DEFAULT_MAX_REQUESTS})",
    )
    capture.add_argument(
        "--count", type=_count(1), metavar="N", help="stop after N requests (recorded or not)"
    )
    capture.add_argument(
        "--raw-bodies",
        action="store_true",
        help="keep every body byte for byte in a body_file next to its case, also JSON "
        "(for signatures over the exact body)",
    )
    capture.add_argument(
        "--keep-secrets",
        action="store_true",
        help="write Authorization, Cookie and every header or query parameter named like a "
        "token, secret, signature, key or password as it was sent (default: masked as "
        f"{REDACTED}, since test cases are committed; a masked signature no longer "
        "matches its body)",
    )
    capture.set_defaults(run=_capture)

    new = subparsers.add_parser(
        "new",
        help="print a starter mapping guessed from a captured request or a payload file",
        description="Guess the sender, text, message_id and event list paths of a request "
        "body and print a mapping with them, the request attached as a test case whose "
        "expectations are what the guessed mapping gives. The result passes "
        "`generic-connector validate` as it is. Exit status: 0 written, 1 nothing to guess "
        "from, 2 usage error.",
    )
    new.add_argument(
        "--from",
        dest="sources",
        action="append",
        type=Path,
        required=True,
        metavar="FILE",
        help="a file written by capture, a JSON payload or a form body; repeat it to attach "
        "more requests (the first one with a text is the one guessed from; a captured "
        "verification challenge becomes a handshake)",
    )
    new.add_argument("--name", help="the channel's name (default: the first file's stem)")
    new.add_argument(
        "--out", type=Path, metavar="FILE", help="write the mapping there instead of printing it"
    )
    new.add_argument("--force", action="store_true", help="replace --out if it exists")
    new.set_defaults(run=_new)


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _capture(args: argparse.Namespace) -> int:
    settings = CaptureSettings(
        out_dir=args.out,
        host=args.host,
        port=args.port,
        answer=args.answer,
        max_body=args.max_body,
        max_requests=args.max_requests,
        count=args.count,
        raw_bodies=args.raw_bodies,
        keep_secrets=args.keep_secrets,
    )
    return run_capture(settings)


def _new(args: argparse.Namespace) -> int:
    out = args.out
    try:
        if out is not None and out.exists() and not args.force:
            raise StarterError(f"{out} exists; give --force to replace it")
        sources = [load_source(path) for path in args.sources]
        name = channel_name(args.name, args.sources[0])
        starter = build(sources, name, out)
    except StarterError as error:
        print(f"generic-connector new: error: {error}", file=sys.stderr)
        return 2
    except NothingToGuess as error:
        print(f"generic-connector new: {error}", file=sys.stderr)
        return 1
    for note in starter.skipped:
        print(f"generic-connector new: {note}", file=sys.stderr)
    try:
        findings = write_checked(starter, out)
    except StarterError as error:
        print(f"generic-connector new: error: {error}", file=sys.stderr)
        return 2
    if findings:  # the guesses are built to pass: say so loudly if one does not
        print("generic-connector new: the starter mapping does not validate:", file=sys.stderr)
        for finding in findings:
            print(finding, file=sys.stderr)
        return 1
    request = starter.document["request"]
    guessed = ", ".join(
        f"{key} {request[key]}"
        for key in ("events", "sender", "text", "message_id")
        if key in request
    )
    if out is None:
        sys.stdout.write(starter.text)
    else:
        cases = "test case passes" if starter.tests_passed == 1 else "test cases pass"
        print(f"wrote {out} ({guessed}; {starter.tests_passed} {cases})")
    return 0
