"""The command line: ``generic-connector validate | dry-run | schema``."""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from generic_connector.config import (
    SCHEMA_PATH,
    ChannelConfig,
    check_channel,
    load_yaml,
    write_schema,
)
from generic_connector.dryrun import simulate
from generic_connector.errors import ConfigError
from generic_connector.request import IncomingRequest
from generic_connector.validate import expand, is_generic_key, summary, validate_file

SAMPLE_REPLY = "This is a sample bot reply."


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``generic-connector`` console script."""
    # What the channel would log, the commands print as findings or in the dry run's result.
    logging.getLogger("generic_connector").addHandler(logging.NullHandler())
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        parser.error(str(error))  # exits 2
    return 2


class UsageError(Exception):
    """Arguments that do not make sense together."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generic-connector", description="Check generic channel mappings before deploying."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate",
        help="check credentials and mapping files and run their test cases",
        description="Exit status: 0 all valid, 1 any invalid, 2 usage error.",
    )
    validate.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="files, or folders meaning every YAML file in them "
        "(default: credentials.yml and mappings/ where they exist)",
    )
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.set_defaults(run=_validate)

    dry = commands.add_parser(
        "dry-run",
        help="show what a channel would make of a captured request, without Rasa",
    )
    dry.add_argument("file", type=Path, help="a mapping file or a credentials file")
    dry.add_argument("--channel", help="in a credentials file: the channel's name or key")
    dry.add_argument("--body", type=Path, required=True, help="file with the raw request body")
    dry.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    dry.add_argument("--query", action="append", default=[], metavar="NAME=VALUE")
    dry.add_argument("--method", default="POST", help="the request's method (default POST)")
    dry.add_argument("--path", default="/webhook", help="the path under /webhooks/<name>")
    dry.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="set a variable"
    )
    dry.add_argument(
        "--reply",
        action="append",
        metavar="TEXT",
        help=f"a bot reply to render the response with (default: {SAMPLE_REPLY!r})",
    )
    dry.add_argument(
        "--replies",
        type=Path,
        metavar="FILE",
        help="a JSON or YAML list of bot messages as Rasa gives them (buttons, image, custom...)",
    )
    dry.set_defaults(run=_dry_run)

    schema = commands.add_parser("schema", help="print the path of the mapping JSON Schema")
    schema.add_argument(
        "--write",
        action="store_true",
        help="write it anew from the registries (auth schemes, formats, stores, kinds)",
    )
    schema.set_defaults(run=_schema)
    return parser


def _schema(args: argparse.Namespace) -> int:
    if args.write:
        write_schema()
    print(SCHEMA_PATH)
    return 0


def _validate(args: argparse.Namespace) -> int:
    paths = args.paths or [p for p in (Path("credentials.yml"), Path("mappings")) if p.exists()]
    if not paths:
        raise UsageError("no paths given, and no credentials.yml or mappings/ here")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    reports = [validate_file(path) for path in expand(paths)]
    valid, invalid, findings = summary(reports)
    if args.format == "json":
        print(json.dumps({"valid": not invalid, "files": [r.as_dict() for r in reports]}, indent=2))
    else:
        for report in reports:
            for finding in report.findings:
                print(finding)
            if report.valid:
                passed = report.tests_passed
                cases = "test case passed" if passed == 1 else "test cases passed"
                tests = f", {passed} {cases}" if passed else ""
                channels = ", ".join(report.channels) or "no generic channels"
                env = f"; reads {', '.join(report.env_names)}" if report.env_names else ""
                print(f"{report.file}: ok ({channels}{tests}{env})")
        files = f"{len(reports)} file" + ("" if len(reports) == 1 else "s")
        print(f"{files}: {valid} valid, {invalid} invalid, {findings} findings")
    return 1 if invalid else 0


def _dry_run(args: argparse.Namespace) -> int:
    os.environ.update(_pairs(args.env, "="))
    config = _channel_from(args.file, args.channel)
    try:
        raw = args.body.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {args.body}: {error.strerror}") from None
    request = IncomingRequest.from_parts(
        raw, _pairs(args.header, ":"), _pairs(args.query, "="), args.method, args.path
    )
    replies = _replies(args)
    print(json.dumps(simulate(config, request, replies), indent=2, ensure_ascii=False))
    return 0


def _replies(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """--replies FILE (a list of Rasa bot messages), else --reply texts, else a sample."""
    if args.replies is None:
        return [{"text": text} for text in (args.reply or [SAMPLE_REPLY])]
    try:
        replies = load_yaml(args.replies)  # JSON is YAML too
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if not isinstance(replies, list) or not all(isinstance(r, dict) for r in replies):
        raise UsageError(f"{args.replies} must hold a list of bot messages (objects)")
    return [dict(reply) for reply in replies]


def _channel_from(path: Path, wanted: Optional[str]) -> ChannelConfig:
    """The one channel of a mapping file, or the chosen generic channel of a credentials file."""
    try:
        document = load_yaml(path)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    candidates: List[Tuple[str, object]] = [(path.stem, document)]
    if isinstance(document, dict) and any(is_generic_key(k) for k in document):
        candidates = [(k, v) for k, v in document.items() if is_generic_key(k)]
    for label, entry in candidates:
        config, findings, _ = check_channel(entry, label)
        if wanted in (None, label) or (config and config.name == wanted):
            if config is None:
                raise UsageError(f"{path} is not valid:\n" + "\n".join(map(str, findings)))
            return config
    raise UsageError(f"no generic channel {wanted!r} in {path}")


def _pairs(items: List[str], separator: str) -> dict:
    pairs = {}
    for item in items:
        name, found, value = item.partition(separator)
        if not found:
            raise UsageError(f"expected NAME{separator}VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


if __name__ == "__main__":
    sys.exit(main())
