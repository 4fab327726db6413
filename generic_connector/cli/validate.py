"""Validation of whole files: credentials files and mapping files, with their test cases.

The channel-level checks are ``config.check_channel``, the same ones ``rasa run`` applies at
start-up; this module finds the channels in a file, checks what only the whole file shows
(two channels with one name, a name Rasa's own channel in the file also has, misspelt
``generic_connector.*`` keys), explains findings in plain words (``explain``), and runs the
mapping test cases. ``startup.load_startup_channel`` is what a channel is built with at
``rasa run`` start-up: the same checks and words, as far as one credentials entry and the
command line show them.
"""

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from generic_connector.cli import silent
from generic_connector.cli.dryrun import CaseError, answer_problem, run_case
from generic_connector.config import (
    SCHEMA,
    ChannelConfig,
    Position,
    check_channel,
    load_yaml,
    locate,
)
from generic_connector.errors import ConfigError, Finding
from generic_connector.explain import explain_findings
from generic_connector.startup import (
    RASA_CHANNELS,
    duplicate_name,
    env_findings,
    rasa_channel_clash,
    route_key,
)

GENERIC_KEYS = ("generic_connector.GenericChannel",)
GENERIC_PREFIX = "generic_connector.channels."
PACKAGE = "generic_connector"
YAML_SUFFIXES = (".yml", ".yaml")


@dataclass
class FileReport:
    """What validating one file found."""

    file: str
    kind: str = "mapping"
    channels: List[str] = field(default_factory=list)
    env_names: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    tests_passed: int = 0
    tests_failed: int = 0
    # Warnings make the file invalid too (``validate_file(..., strict=True)``).
    strict: bool = False

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def valid(self) -> bool:
        return not (self.findings if self.strict else self.errors)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "valid": self.valid,
            "channels": self.channels,
            "env": self.env_names,
            "tests": {"passed": self.tests_passed, "failed": self.tests_failed},
            "findings": [f.as_dict() for f in self.errors],
            "warnings": [f.as_dict() for f in self.warnings],
        }


def is_generic_key(key: Any) -> bool:
    """Whether a credentials key names a generic channel."""
    return isinstance(key, str) and (key in GENERIC_KEYS or key.startswith(GENERIC_PREFIX))


def expand(paths: List[Path]) -> List[Path]:
    """Files to validate: a folder stands for every YAML file directly in it."""
    files: List[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        else:
            files.append(path)
    return files


def validate_file(
    path: Path, check_env: Optional[bool] = False, strict: bool = False
) -> FileReport:
    """Check a credentials file or a mapping file, and run the test cases it holds.

    ``check_env``: the environment variables each channel reads must be set, as ``rasa run``
    requires at start-up; None: so in CI (``env_check_default``) for a credentials file, the
    channels a deployment's ``rasa run`` starts. ``strict``: warnings make the file invalid.
    """
    report = FileReport(str(path), strict=strict)
    try:
        document = load_yaml(path)
    except ConfigError as error:
        report.findings = explain_findings(error.findings)
        return report
    start: Position = (str(path), 1, 1)
    if document is None:
        report.findings.append(Finding("empty-file", "", "the file is empty", "", *start))
    elif not isinstance(document, dict):
        message = "must be a mapping of keys, not a list or a value"
        report.findings.append(Finding("not-a-mapping", "", message, "", *start))
    elif _is_credentials(document):
        report.kind = "credentials"
        check_env = env_check_default() if check_env is None else check_env
        channels: List[Tuple[ChannelConfig, Position]] = []
        positions: Dict[Any, Position] = getattr(document, "positions", {})
        for key, entry in document.items():
            origin = positions.get(key, start)
            problem = channel_key_problem(key)
            if problem is not None:
                message, hint = problem
                finding = Finding("unknown-channel-key", str(key), message, hint, *origin)
                report.findings.append(finding)
            elif is_generic_key(key):
                config = _check(report, entry, key, origin, path.parent, check_env)
                if config is not None:
                    channels.append((config, origin))
        report.findings += _clashes(channels, {k for k in document if k in RASA_CHANNELS})
    else:
        _check(report, document, path.stem, start, path.parent, bool(check_env))
    return report


def _is_credentials(document: Dict[str, Any]) -> bool:
    return any(
        is_generic_key(key) or key in RASA_CHANNELS or (isinstance(key, str) and "." in key)
        for key in document
    )


def _check(
    report: FileReport, entry: Any, label: str, origin: Position, base: Path, check_env: bool
) -> Optional[ChannelConfig]:
    config, findings, document = check_channel(entry, label, origin=origin)
    report.findings += explain_findings(findings, document, label)
    if config is None:
        return None
    report.channels.append(config.name)
    report.env_names += [n for n in config.env_names() if n not in report.env_names]
    if check_env:
        report.findings += env_findings(config, origin)
    templates = silent.templates(config, document)
    with silent.recording(templates) as data:  # what the templates read, case by case
        for finding in _run_cases(config, document, base):
            if finding is None:
                report.tests_passed += 1
            else:
                report.tests_failed += 1
                report.findings.append(finding)
        report.findings += _answer_findings(config, document, base)
    report.findings += silent.findings(config, document, templates, data)
    return config


def _answer_findings(config: ChannelConfig, document: Dict[str, Any], base: Path) -> List[Finding]:
    """The test cases' requests answered with one bot message of each kind: a response
    template that fails there would fail after Rasa handled a real message."""
    findings = []
    for case in document.get("tests", []):
        try:
            problem = answer_problem(config, case, base)
        except CaseError:
            continue  # said by the test case itself
        if problem is not None:
            where = locate(document, ["response"]) or (None, None, None)
            message = (
                f"{problem} (test {case['name']!r} with a text, buttons, an image and a custom "
                "message as the bot's replies)"
            )
            hint = "Rasa would handle the message and the platform get no answer it can use"
            findings.append(
                Finding("answer-fails", f"{config.name}.response", message, hint, *where)
            )
    return findings


def _run_cases(
    config: ChannelConfig, document: Dict[str, Any], base: Path
) -> Iterator[Optional[Finding]]:
    """None for each passing case, a located finding for each failing one."""
    for index, case in enumerate(document.get("tests", [])):
        path: List[Any] = ["tests", index, "name"]
        where = locate(document, path) or (None, None, None)
        try:
            failures = run_case(config, case, base)
        except CaseError as error:
            failures = [str(error)]
        if not failures:
            yield None
        else:
            key = f"{config.name}.tests[{index}]"
            message = f"test {case['name']!r} failed: " + "; ".join(failures)
            yield Finding("test-failed", key, message, "", *where)


def summary(reports: List[FileReport]) -> Tuple[int, int, int]:
    """(valid files, invalid files, findings: errors and warnings)."""
    invalid = [r for r in reports if not r.valid]
    return len(reports) - len(invalid), len(invalid), sum(len(r.findings) for r in reports)


# --- What only the whole credentials file shows -------------------------------------------


def channel_key_problem(key: Any) -> Optional[Tuple[str, str]]:
    """(message, hint) for a credentials key meant as a generic channel that Rasa cannot
    load: ``generic_connector.channel.shop``, ``generic-connector.GenericChannel``,
    ``generic_connector.channels`` without a label. None for every other key."""
    if not isinstance(key, str) or key in GENERIC_KEYS or key in RASA_CHANNELS:
        return None
    if key.startswith(GENERIC_PREFIX):
        label = key[len(GENERIC_PREFIX) :]
        if label and "." not in label and not label.startswith("__"):
            return None
        hint = "one label after generic_connector.channels., e.g. generic_connector.channels.shop"
        return f"'{key}' is not a generic channel key: its label must be one word", hint
    head, _, rest = key.partition(".")
    if head != PACKAGE and not difflib.get_close_matches(head.lower(), [PACKAGE], cutoff=0.8):
        if not difflib.get_close_matches(key, GENERIC_KEYS, cutoff=0.85):
            return None
        rest = key.partition(".")[2] if "." in key else "GenericChannel"
    section, _, label = rest.partition(".")
    if label and difflib.get_close_matches(section.lower(), ["channels"], cutoff=0.7):
        suggestion = GENERIC_PREFIX + label
    elif not label and section == "channels":
        suggestion = GENERIC_PREFIX + "<label>"
    else:
        suggestion = GENERIC_KEYS[0]
    message = "unknown channel key: rasa run would stop, finding no channel class for it"
    return message, f"did you mean '{suggestion}'?"


def _clashes(channels: List[Tuple[ChannelConfig, Position]], rasa_keys: Set[str]) -> List[Finding]:
    findings = []
    seen: Dict[str, str] = {}
    for config, origin in channels:
        name = config.name
        if route_key(name) in seen:
            message, hint = duplicate_name(name, seen[route_key(name)])
            findings.append(Finding("duplicate-name", name, message, hint, *origin))
        seen.setdefault(route_key(name), name)
        if name in rasa_keys:
            message, hint = rasa_channel_clash(name)
            findings.append(Finding("rasa-channel-clash", name, message, hint, *origin))
    return findings


def env_check_default(environ: Optional[Dict[str, str]] = None) -> bool:
    """Whether ``validate`` checks the environment by default: in CI (``CI`` set and not
    false), where a missing secret would stop the deployment's ``rasa run``."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


# --- The schema of a credentials file -----------------------------------------------------

CHANNEL_DEFINITION = "generic_channel"


def credentials_schema() -> Dict[str, Any]:
    """A JSON Schema of credentials.yml: generic channel entries are checked as channels (an
    entry with ``mapping:`` needs nothing else), misspelt ``generic_connector.*`` keys are
    refused, and Rasa's own and other channels are left alone."""
    channel = {k: v for k, v in SCHEMA.items() if k not in ("$schema", "definitions", "title")}
    channel.pop("required", None)
    channel["description"] = (
        "A generic channel: `mapping:` names a mapping file or a ready mapping (telegram, "
        "slack, ...), and keys written here are merged over that file's, key by key."
    )
    channel["anyOf"] = [{"required": ["mapping"]}, {"required": ["name", "request"]}]
    definitions = dict(SCHEMA.get("definitions", {}))
    definitions[CHANNEL_DEFINITION] = channel
    reference = {"$ref": f"#/definitions/{CHANNEL_DEFINITION}"}
    known = "generic_connector.GenericChannel or generic_connector.channels.<label>"
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Rasa credentials.yml with generic_connector channels",
        "description": (
            "Rasa's channels by key. Generic channels are generic_connector.GenericChannel and "
            "generic_connector.channels.<label>; Rasa's own (rest, slack, ...) and other "
            "channels are not checked here."
        ),
        "type": ["object", "null"],
        "properties": {key: reference for key in GENERIC_KEYS},
        "patternProperties": {"^generic_connector\\.channels\\.(?!__)[^.]+$": reference},
        "propertyNames": {
            "not": {"pattern": "^generic_connector(?!\\.GenericChannel$|\\.channels\\.[^.]+$)"},
            "errorMessage": f"not a generic channel key: use {known}",
        },
        "additionalProperties": True,
        "definitions": definitions,
    }
