"""``generic-connector setup``: register the channel's webhook URL with the platform.

    generic-connector setup MAPPING [--channel NAME] --url https://HOST/webhooks/<name>/webhook
                            [--dry-run] [--env NAME=VALUE ...] [--format text|json]

MAPPING is a mapping file, a credentials file (--channel chooses among its generic channels)
or the name of a ready mapping (telegram). The mapping's ``setup`` requests are rendered over
{url, channel} (the URL given, the channel's name) and sent in order, as outbound requests
are (outbound.allow_hosts and tokens apply), each judged by its ``success``: the first that
fails stops the others. --dry-run prints the requests, environment variables by name, and
sends nothing. The platform's answers are printed with the secrets the requests carried cut
out.

The URL must be https (http only for 127.0.0.1 and localhost, for tests) and end with the
path Rasa serves the channel at, /webhooks/<name>/webhook (or one of its routes).

Exit status: 0 every request succeeded (with --dry-run: every one could be sent), 1 one
failed, 2 usage error (the mapping, the URL, a variable not set, no setup section).
"""

import argparse
import asyncio
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import SplitResult, urlsplit

from generic_connector import defaults, routes
from generic_connector.cli import UsageError, _channel_from, _pairs
from generic_connector.cli.dryrun import ShownOutbound, _masked, environment
from generic_connector.cli.validate import is_generic_key
from generic_connector.config import (
    ChannelConfig,
    _mapping_not_found,
    load_yaml,
    resolve_mapping,
)
from generic_connector.delivery import attempt, client_session, scrub
from generic_connector.errors import ConfigError, RenderError
from generic_connector.expressions import EvaluationError
from generic_connector.logtext import printable, printable_json
from generic_connector.outbound import Outbound, OutboundRequest, URLRefused, checked_url
from generic_connector.retry import Outcome

# Hosts a webhook URL may name over plain http: a platform stand-in on this machine.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FAILED = 1
# A setup request without ``success`` is judged by its status alone; this one makes
# ``delivery.attempt`` read its answer too, to be shown.
_READ_ANSWER = "`true`"


def add_command(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``setup``; it sets ``run`` to a function of the parsed arguments that returns
    the exit status."""
    setup = subparsers.add_parser(
        "setup",
        help="register the channel's webhook URL with the platform (the mapping's setup)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    setup.add_argument(
        "mapping", help="a mapping file, a credentials file, or a ready mapping's name (telegram)"
    )
    setup.add_argument("--channel", help="in a credentials file: the channel's name or key")
    setup.add_argument(
        "--url",
        required=True,
        help="the public webhook URL the platform is to call: https://HOST/webhooks/<name>/webhook",
    )
    setup.add_argument(
        "--dry-run", action="store_true", help="print the requests, variables by name; send none"
    )
    setup.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="set a variable"
    )
    setup.add_argument("--format", choices=("text", "json"), default="text")
    setup.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with environment(_pairs(args.env, "=")):  # taken back afterwards (in-process callers)
        config = _channel(args.mapping, args.channel)
        url = webhook_url(args.url, config)
        if not config.setup:
            raise UsageError(
                f"channel {config.name}: this mapping has no setup section; register the URL "
                f"on the platform: {url} (its console or API: see the mapping's comments)"
            )
        _check_environment(config)
        report = register(config, url, dry_run=args.dry_run)
    if args.format == "json":
        print(printable_json(report, indent=2))
    else:
        for line in _text(report):
            print(line)
    return 0 if report["ok"] else FAILED


# The channel and its URL ----------------------------------------------------------------------


def _channel(reference: str, wanted: Optional[str]) -> ChannelConfig:
    """The channel of a mapping file, a credentials file or a ready mapping's name."""
    path = resolve_mapping(reference, Path.cwd())
    if path is None:
        message, hint = _mapping_not_found(reference)
        raise UsageError(f"{message} ({hint})")
    if wanted is None:
        try:
            document = load_yaml(path)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        keys = [k for k in document if is_generic_key(k)] if isinstance(document, dict) else []
        if len(keys) > 1:
            raise UsageError(
                f"{path} holds several generic channels ({', '.join(map(str, keys))}): "
                "choose one with --channel"
            )
    return _channel_from(path, wanted)


def webhook_url(url: str, config: ChannelConfig) -> str:
    """``url`` when a platform can be told to send the channel's webhooks there; else a
    UsageError saying what is wrong with it."""
    webhook = f"/webhooks/{config.name}/webhook"
    example = f"https://bot.example.com{webhook}"
    try:
        checked_url(url)
    except URLRefused as refused:
        raise UsageError(f"--url {url!r} is {refused}; give one such as {example}") from None
    parts = urlsplit(url)
    if parts.scheme != "https" and parts.hostname not in LOCAL_HOSTS:
        raise UsageError(
            f"--url must be an https URL: platforms send webhooks to https only (http is "
            f"accepted for 127.0.0.1 and localhost, for tests); got {url!r}"
        )
    if parts.fragment or parts.username is not None:
        raise UsageError(
            f"--url holds a {'fragment (#...)' if parts.fragment else 'user name (...@)'}, "
            f"which no platform sends; give one such as {example}"
        )
    if not _serves(config, parts):
        others = [path for _, path in config.routes() if path != "/webhook"]
        routed = f" (or one of its routes: {', '.join(dict.fromkeys(others))})" if others else ""
        raise UsageError(
            f"--url must end with the path Rasa serves channel {config.name!r} at, "
            f"{webhook}{routed}; got the path {parts.path or '/'!r}"
        )
    return url


def _serves(config: ChannelConfig, parts: SplitResult) -> bool:
    """Whether the URL's path ends with ``/webhooks/<name>`` and one of the channel's routes
    (a reverse proxy may put a prefix before it)."""
    prefix = f"/webhooks/{config.name}"
    path, start = parts.path, parts.path.find(prefix + "/")
    while start >= 0:
        rest = path[start + len(prefix) :]
        if any(routes.match(config.routes(), method, rest) for method in routes.METHODS):
            return True
        start = path.find(prefix + "/", start + 1)
    return False


def _check_environment(config: ChannelConfig) -> None:
    """The variables the setup requests read with env() must be set: rendered without them,
    a request would be sent without its token (or not rendered at all)."""
    names = {n for template in config.setup for e in template.expressions() for n in e.env_names}
    missing = sorted(name for name in names if name not in os.environ)
    if missing:
        variables = "variable" if len(missing) == 1 else "variables"
        raise UsageError(
            f"environment {variables} {', '.join(missing)} not set: the setup requests read "
            f"{'it' if len(missing) == 1 else 'them'}; export or give --env NAME=VALUE"
        )


# Rendering and sending ------------------------------------------------------------------------


def register(config: ChannelConfig, url: str, dry_run: bool = False) -> Dict[str, Any]:
    """The setup requests for ``url``, rendered and (unless ``dry_run``) sent in order until
    one fails: what the command prints, as JSON."""
    outbound = config.outbound or Outbound({})
    shown = ShownOutbound(outbound, _masked(config))  # renders each request twice: sent, shown
    context = {"url": url, "channel": config.name}
    rendered: List[Tuple[Dict[str, Any], Optional[OutboundRequest]]] = []
    for template in config.setup:
        try:
            request = shown.render_template(template, context, None)
        except (RenderError, EvaluationError) as error:
            rendered.append(({"name": template.name, "problem": str(error)}, None))
            continue
        view = {"name": template.name, **shown.shown[id(request)]}
        del view["kind"]
        rendered.append((view, request))
    report: Dict[str, Any] = {"channel": config.name, "url": url, "dry_run": dry_run}
    if dry_run:
        steps = [{**view, "outcome": "not sent"} for view, _ in rendered]
        for step in steps:
            _explain_refusal(step)
        report["ok"] = all("problem" not in step for step in steps)
        report["requests"] = steps
        return report
    timeout = config.outbound.timeout if config.outbound else defaults.OUTBOUND_TIMEOUT
    steps = asyncio.run(_send(config, outbound, rendered, timeout, list(shown.environ)))
    report["ok"] = all(step["outcome"] == "done" for step in steps)
    report["requests"] = steps
    return report


def _explain_refusal(step: Dict[str, Any]) -> None:
    if step.get("allowed") is False:
        step["problem"] = "its host (and port) is not in outbound.allow_hosts: not sent"


async def _send(
    config: ChannelConfig,
    outbound: Outbound,
    rendered: List[Tuple[Dict[str, Any], Optional[OutboundRequest]]],
    timeout: float,
    secrets: List[str],
) -> List[Dict[str, Any]]:
    """Each request in turn, one attempt each, until one fails; the rest are not sent.
    ``secrets``: the variables whose values are cut out of the answers shown."""
    tokens = None
    if config.tokens:
        from generic_connector.tokens import TokenProvider

        hosts = outbound.allow_hosts
        tokens = TokenProvider(config.name, config.tokens, allow_hosts=hosts, timeout=timeout)
    steps: List[Dict[str, Any]] = []
    failed = False
    async with client_session(timeout) as session:
        for view, request in rendered:
            step = dict(view)
            steps.append(step)
            if failed:
                step["outcome"] = "not sent"
                continue
            _explain_refusal(step)
            if request is None or "problem" in step:
                step["outcome"], failed = "failed", True
                continue
            if request.success is None:
                request = dataclasses.replace(request, success=_READ_ANSWER)
            if tokens is None:
                outcome, sent_as = await attempt(session, request), request
            else:
                outcome, sent_as = await tokens.attempt(session, request)
            step.update(_outcome(outcome, sent_as, secrets))
            failed = not outcome.done
    if tokens is not None:
        await tokens.close()
    return steps


def _outcome(outcome: Outcome, sent_as: OutboundRequest, secrets: List[str]) -> Dict[str, Any]:
    """A step's outcome as printed: the status, and the platform's answer with the request's
    URL, header values and environment variables cut out."""
    result: Dict[str, Any] = {"outcome": "done" if outcome.done else "failed"}
    result["status"] = outcome.status
    if outcome.done:
        value = outcome.value
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    else:
        text = outcome.answer
        result["problem"] = outcome.problem
    if text:
        answer = scrub(_unset(text, secrets), sent_as)
        try:
            result["answer"] = json.loads(answer)
        except ValueError:  # not JSON, or cut short
            result["answer"] = answer
    return result


def _unset(text: str, names: List[str]) -> str:
    """``text`` with the values of the environment variables ``names`` (those the channel
    reads) written as ``${NAME}``: a platform may echo a secret the request's body carried."""
    values = [(os.environ.get(name, ""), name) for name in names]
    for value, name in sorted(values, key=lambda pair: len(pair[0]), reverse=True):
        if len(value) >= 4:
            text = text.replace(value, f"${{{name}}}")
    return text


# Text output ----------------------------------------------------------------------------------


def _text(report: Dict[str, Any]) -> List[str]:
    dry = " (dry run: nothing is sent)" if report["dry_run"] else ""
    lines = [f"Channel {report['channel']}: registering {report['url']}{dry}"]
    for step in report["requests"]:
        name = printable(str(step["name"]))
        if "method" not in step:
            lines.append(f"{name}: cannot be rendered: {printable(step.get('problem', ''))}")
            continue
        if "url" not in step:  # it can be sent, but not shown with the variables by name
            lines.append(f"{name}: {step['method']} ({printable(step['not_shown'])})")
        else:
            lines.append(f"{name}: {step['method']} {printable(step['url'])}")
        if report["dry_run"]:
            for header, value in step.get("headers", {}).items():
                lines.append(f"  {printable(header)}: {printable(value)}")
            body = step.get("body")
            if body not in ("", None):
                shown = body if isinstance(body, str) else printable_json(body)
                lines.append(f"  {printable(shown)}")
            if "problem" in step:
                lines.append(f"  {printable(step['problem'])}")
            continue
        lines.append(f"  {_said(step)}")
    lines.append(_summary(report))
    return lines


def _said(step: Dict[str, Any]) -> str:
    if step["outcome"] == "not sent":
        return "not sent: a request before it failed"
    answer = step.get("answer")
    shown = answer if isinstance(answer, str) else printable_json(answer)
    said = f": {printable(shown)}" if answer not in (None, "") else ""
    if step["outcome"] == "done":
        return f"done: HTTP {step['status']}{said}"
    return f"failed: {printable(step.get('problem') or '')}{said}"


def _summary(report: Dict[str, Any]) -> str:
    steps = report["requests"]
    count = f"{len(steps)} setup request" + ("" if len(steps) == 1 else "s")
    if report["dry_run"]:
        verdict = "can be sent" if report["ok"] else "cannot all be sent"
        return f"{count} {verdict}; run again without --dry-run to send"
    if report["ok"]:
        return f"{count} done: the platform sends the channel's webhooks to {report['url']}"
    failed = next(step["name"] for step in steps if step["outcome"] == "failed")
    return f"{count}: {failed} failed, so the webhook is not (fully) registered"
