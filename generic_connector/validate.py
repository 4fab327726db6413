"""Validation of whole files: credentials files and mapping files, with their test cases.

The channel-level checks are ``config.check_channel``, the same ones ``rasa run`` applies at
start-up; this module finds the channels in a file, checks what only the whole file shows
(two channels with one name, a name Rasa's own channel in the file also has, misspelt
``generic_connector.*`` keys), explains findings in plain words, and runs the mapping test
cases. ``load_startup_channel`` is what a channel is built with at ``rasa run`` start-up: the
same checks and words, as far as one credentials entry and the command line show them.
"""

import dataclasses
import difflib
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import yaml

from generic_connector.config import (
    SCHEMA,
    ChannelConfig,
    Position,
    check_channel,
    environment_problems,
    load_yaml,
    locate,
)
from generic_connector.dryrun import CaseError, answer_problem, run_case
from generic_connector.errors import ConfigError, Finding

GENERIC_KEYS = ("generic_connector.GenericChannel",)
GENERIC_PREFIX = "generic_connector.channels."
PACKAGE = "generic_connector"
# Rasa 3.6's own channels (rasa.core.channels.BUILTIN_CHANNELS, held to it by a test): a file
# with such keys is a credentials file; their entries are not ours to check, but a generic
# channel must not take the name (the URL /webhooks/<name>/) of one in the same file.
RASA_CHANNELS = {
    "botframework", "callback", "cmdline", "facebook", "hangouts", "mattermost", "rasa", "rest",
    "rocketchat", "slack", "socketio", "telegram", "twilio", "twilio_voice", "webexteams",
}  # fmt: skip
YAML_SUFFIXES = (".yml", ".yaml")
COMPILE = "expression does not compile: "
# Where `rasa run` reads credentials when --credentials names no file
# (rasa.shared.constants.DEFAULT_CREDENTIALS_PATH).
DEFAULT_CREDENTIALS = "credentials.yml"


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

    @property
    def valid(self) -> bool:
        return not self.findings

    def as_dict(self) -> Dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "valid": self.valid,
            "channels": self.channels,
            "env": self.env_names,
            "tests": {"passed": self.tests_passed, "failed": self.tests_failed},
            "findings": [f.as_dict() for f in self.findings],
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


def validate_file(path: Path, check_env: Optional[bool] = False) -> FileReport:
    """Check a credentials file or a mapping file, and run the test cases it holds.

    ``check_env``: the environment variables each channel reads must be set, as ``rasa run``
    requires at start-up; None: so in CI (``env_check_default``) for a credentials file, the
    channels a deployment's ``rasa run`` starts.
    """
    report = FileReport(str(path))
    try:
        document = load_yaml(path)
    except ConfigError as error:
        report.findings = explain_findings(error.findings)
        return report
    start: Position = (str(path), 1, 1)
    if document is None:
        report.findings.append(Finding("", "the file is empty", "", *start))
    elif not isinstance(document, dict):
        report.findings.append(
            Finding("", "must be a mapping of keys, not a list or a value", "", *start)
        )
    elif _is_credentials(document):
        report.kind = "credentials"
        check_env = env_check_default() if check_env is None else check_env
        channels: List[Tuple[ChannelConfig, Position]] = []
        for key, entry in document.items():
            origin = document.positions.get(key, start)
            problem = channel_key_problem(key)
            if problem is not None:
                report.findings.append(Finding(str(key), *problem, *origin))
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
    report.env_names += config.env_names()
    if check_env:
        report.findings += env_findings(config, origin)
    for finding in _run_cases(config, document, base):
        if finding is None:
            report.tests_passed += 1
        else:
            report.tests_failed += 1
            report.findings.append(finding)
    report.findings += _answer_findings(config, document, base)
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
            findings.append(Finding(f"{config.name}.response", message, hint, *where))
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
            yield Finding(key, message, "", *where)


def summary(reports: List[FileReport]) -> Tuple[int, int, int]:
    """(valid files, invalid files, findings)."""
    invalid = [r for r in reports if not r.valid]
    return len(reports) - len(invalid), len(invalid), sum(len(r.findings) for r in invalid)


def env_findings(config: ChannelConfig, origin: Position = (None, None, None)) -> List[Finding]:
    """One finding per environment variable the channel reads that is not set, then empty
    secrets and secrets the auth scheme cannot use: what stops ``rasa run`` at start-up."""
    hint = "the mapping reads it; set it before rasa run starts"
    findings = [
        Finding(config.name, f"environment variable {name} is not set", hint, *origin)
        for name in config.env_names()
        if name not in os.environ
    ]
    for message, problem_hint in environment_problems(config):
        if not message.endswith(" not set"):  # said above, one by one
            findings.append(Finding(config.name, message, problem_hint, *origin))
    return findings


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


def route_key(name: str) -> str:
    """What tells generic channels apart in Rasa's web server: GenericChannel names its
    blueprint after the channel name with every non-word character read as '_'."""
    return re.sub(r"\W", "_", name)


def duplicate_name(name: str, other: str) -> Tuple[str, str]:
    """(message, hint) for a generic channel whose name another one already has."""
    if name == other:
        message = f"two generic channels are named '{name}'"
    else:
        message = f"generic channels '{other}' and '{name}' cannot run side by side"
    hint = "each generic channel needs a name of its own: it is its URL /webhooks/<name>/"
    if name != other:
        hint = "Rasa's web server tells them apart by the name with '-' read as '_': rename one"
    return message, hint


def rasa_channel_clash(name: str) -> Tuple[str, str]:
    """(message, hint) for a generic channel named like Rasa's own channel in the same file."""
    message = f"generic channel '{name}' takes the name of Rasa's own {name}: channel in this file"
    hint = (
        f"both would serve /webhooks/{name}/: rename the generic channel (name: my-{name}) "
        f"or remove the {name}: entry"
    )
    return message, hint


def _clashes(channels: List[Tuple[ChannelConfig, Position]], rasa_keys: Set[str]) -> List[Finding]:
    findings = []
    seen: Dict[str, str] = {}
    for config, origin in channels:
        name = config.name
        if route_key(name) in seen:
            findings.append(Finding(name, *duplicate_name(name, seen[route_key(name)]), *origin))
        seen.setdefault(route_key(name), name)
        if name in rasa_keys:
            findings.append(Finding(name, *rasa_channel_clash(name), *origin))
    return findings


# --- At rasa run start-up -----------------------------------------------------------------

# Generic channels built in this process, by route_key: Rasa builds each from its own entry and
# registers them all afterwards, where a second one of a name would fail with a traceback.
_STARTED: Dict[str, str] = {}


def load_startup_channel(
    credentials: Any, label: str = "generic channel", argv: Optional[Sequence[str]] = None
) -> ChannelConfig:
    """Validate and compile a channel at ``rasa run`` start-up (``from_credentials``).

    Raises ConfigError with the findings ``generic-connector validate`` words the same way:
    the entry's own problems, unset environment variables, a name another generic channel of
    this process already has, and a name Rasa's own channel in the credentials file on the
    command line (``argv``, default ``sys.argv[1:]``) also has.
    """
    config, findings, document = check_channel(credentials, label)
    findings = explain_findings(findings, document, label)
    if config is not None:
        findings += env_findings(config) + startup_clashes(config.name, argv)
    if config is None or findings:
        raise ConfigError(findings)
    _STARTED[route_key(config.name)] = config.name
    return config


def startup_clashes(name: str, argv: Optional[Sequence[str]] = None) -> List[Finding]:
    """A generic channel's name taken by another of this process, or by Rasa's own channel in
    the credentials file ``rasa run`` was started with."""
    findings = []
    other = _STARTED.get(route_key(name))
    if other is not None:
        findings.append(Finding(name, *duplicate_name(name, other)))
    if name in RASA_CHANNELS:
        file = credentials_on_command_line(argv)
        if file is not None and name in _keys_of(file):
            findings.append(Finding(name, *rasa_channel_clash(name), file=str(file)))
    return findings


def forget_started_channels() -> None:
    """Forget the generic channels built in this process (for tests that build several)."""
    _STARTED.clear()


def credentials_on_command_line(argv: Optional[Sequence[str]] = None) -> Optional[Path]:
    """The credentials file of ``rasa run [--credentials FILE]``, as Rasa picks it: the file
    given when it exists, else credentials.yml when it exists. None for other commands."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "run" or args[1:2] == ["actions"]:
        return None
    given = None
    for index, arg in enumerate(args):
        option, equals, value = arg.partition("=")
        if len(option) > 4 and "--credentials".startswith(option):  # argparse takes prefixes
            given = value if equals else (args[index + 1] if index + 1 < len(args) else None)
    for candidate in (given, DEFAULT_CREDENTIALS):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _keys_of(file: Path) -> Set[str]:
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return set()
    return {k for k in document if isinstance(k, str)} if isinstance(document, dict) else set()


# --- Findings in plain words --------------------------------------------------------------


def explain_findings(
    findings: List[Finding], document: Optional[Dict[str, Any]] = None, label: str = ""
) -> List[Finding]:
    """The findings with raw parser messages explained: JMESPath syntax errors, YAML errors,
    keys at the wrong level and expressions YAML did not read as text."""
    name = document.get("name") if isinstance(document, dict) else None
    prefix = name if isinstance(name, str) and name else label
    return [explain_finding(f, document, prefix) for f in findings]


def explain_finding(
    finding: Finding, document: Optional[Dict[str, Any]] = None, prefix: str = ""
) -> Finding:
    """One finding, explained; unchanged when there is nothing to add."""
    message, hint = finding.message, finding.hint
    keys = _keys_in(finding.path, prefix)
    if message.startswith(COMPILE):
        source = _value_at(document, keys)
        plain = explain_expression_error(
            message[len(COMPILE) :], source if isinstance(source, str) else None
        )
        if plain is not None:
            message, hint = COMPILE + plain[0], plain[1]
    elif message.startswith("unknown key '") and keys:
        elsewhere = belongs_under(str(keys[-1]), keys[:-1])
        if elsewhere is not None:
            hint = elsewhere
    elif message.startswith("must be a string, got ") and message[22:] in _CONTAINERS:
        message = "must be a string, got " + _CONTAINERS[message[22:]]
        hint = _quote_hint(finding, keys, "{" if message.endswith("object") else "[")
    elif message.startswith("not valid YAML: "):
        hint = _yaml_hint(finding) or hint
    if (message, hint) == (finding.message, finding.hint):
        return finding
    return dataclasses.replace(finding, message=message, hint=hint)


# How a type finding names a YAML object or list (a LocatedDict is an object read from YAML).
_CONTAINERS = {"an object": "an object", "LocatedDict": "an object", "a list": "a list"}


def _keys_in(path: str, prefix: str) -> List[Any]:
    """The key path of a finding's ``path`` (``shop.request.ignore[0].when``), without the
    channel's name in front."""
    if prefix and (
        path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")
    ):
        path = path[len(prefix) :]
    elif prefix:
        return []
    return [int(i) if i else k for i, k in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path)]


def _value_at(document: Any, keys: List[Any]) -> Any:
    node = document
    for key in keys:
        found = isinstance(node, dict) and key in node
        if not (found or (isinstance(node, list) and isinstance(key, int) and key < len(node))):
            return None
        node = node[key]
    return node


@lru_cache(maxsize=1)
def _schema_keys() -> Tuple[Dict[str, List[Tuple[str, ...]]], Set[str]]:
    """Where each key of the channel schema may be written (section paths, lists as "[]"),
    and the keys that hold an expression. Test cases are left out: their keys mirror the
    mapping's."""
    sections: Dict[str, List[Tuple[str, ...]]] = {}
    expressions: Set[str] = set()
    definitions = SCHEMA.get("definitions", {})

    def walk(schema: Any, path: Tuple[str, ...], depth: int) -> None:
        if not isinstance(schema, dict) or depth > 12:
            return
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/definitions/"):
            walk(definitions.get(reference.rsplit("/", 1)[1]), path, depth + 1)
        for key, sub in schema.get("properties", {}).items():
            if path == () and key == "tests":
                continue
            if path not in sections.setdefault(key, []):
                sections[key].append(path)
            if isinstance(sub, dict) and (
                sub.get("$ref") == "#/definitions/expression" or sub.get("format") == "jmespath"
            ):
                expressions.add(key)
            walk(sub, path + (key,), depth + 1)
        items = schema.get("items")
        walk(items, path + ("[]",), depth + 1)
        for keyword in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(keyword, []):
                walk(sub, path, depth + 1)
        walk(schema.get("then"), path, depth + 1)
        walk(schema.get("else"), path, depth + 1)

    walk(SCHEMA, (), 0)
    return sections, expressions


def belongs_under(key: str, section: List[Any]) -> Optional[str]:
    """``'text belongs under request'``: where a key that is unknown here is written instead."""
    here = tuple("[]" if isinstance(k, int) else str(k) for k in section)
    places = [p for p in _schema_keys()[0].get(key, []) if p != here]
    if not places:
        return None
    place = min(places, key=len)  # the shallowest; among those, the schema's order
    if not place:
        return f"{key} belongs at the top level of the channel"
    return f"{key} belongs under {'.'.join(place).replace('.[]', '[]')}"


def _quoted(value: str) -> str:
    """``value`` as a YAML string that keeps it as it is."""
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(finding: Finding) -> Optional[str]:
    if not finding.file or not finding.line:
        return None
    try:
        lines = Path(finding.file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[finding.line - 1] if finding.line <= len(lines) else None


_KEY_VALUE = re.compile(r"^\s*(?:-\s+)?(?P<key>[A-Za-z_][\w-]*):\s+(?P<value>\S.*?)\s*$")


def _quote_hint(finding: Finding, keys: List[Any], bracket: str) -> str:
    """For an expression YAML read as an object or a list: quote it."""
    read_as = "an object" if bracket == "{" else "a list"
    key = str(keys[-1]) if keys else "key"
    line = _line(finding)
    found = _KEY_VALUE.match(line or "")
    value = found["value"] if found and found["value"].startswith(bracket) else None
    example = _quoted(value) if value else ('"{a: b.c}"' if bracket == "{" else '"[a, b]"')
    return (
        f"an expression starting with {bracket} must be quoted in YAML, or YAML reads it as "
        f"{read_as}: {key}: {example}"
    )


# Characters that make YAML read a plain value as something else than the text written.
_YAML_SPECIAL = "{[`@!*&%"


def _yaml_hint(finding: Finding) -> Optional[str]:
    """For a YAML error on (or just after) an unquoted expression: quote it."""
    if not finding.file or not finding.line:
        return None
    expression_keys = _schema_keys()[1]
    for line_number in range(finding.line, max(0, finding.line - 3), -1):
        line = _line(dataclasses.replace(finding, line=line_number))
        found = _KEY_VALUE.match(line or "")
        if not found or found["key"] not in expression_keys:
            continue
        key, value = found["key"], found["value"]
        if value[0] in _YAML_SPECIAL or ": " in value:
            first = value[0] if value[0] in _YAML_SPECIAL else ": "
            what = f"starting with {first}" if first != ": " else "holding ': '"
            return f"an expression {what} must be quoted in YAML: {key}: {_quoted(value)}"
    return None


# jmespath's token types, as the messages name them.
_TOKENS = {
    "dot": "`.`", "eof": "the end", "literal": "a `literal`", "number": "a number",
    "lbracket": "`[`", "rbracket": "`]`", "lbrace": "`{`", "rbrace": "`}`", "lparen": "`(`",
    "rparen": "`)`", "comma": "`,`", "colon": "`:`", "pipe": "`|`", "or": "`||`",
    "and": "`&&`", "star": "`*`", "flatten": "`[]`", "filter": "`[?`", "current": "`@`",
    "expref": "`&`", "not": "`!`", "eq": "`==`", "ne": "`!=`", "lt": "`<`", "gt": "`>`",
    "lte": "`<=`", "gte": "`>=`", "unquoted_identifier": "a name",
    "quoted_identifier": "a quoted name", "raw_string": "a 'string'",
}  # fmt: skip
_CLOSING = {"(": ")", "[": "]", "{": "}"}
_OPERATORS = ("||", "&&", "==", "!=", "<=", ">=", "|", "<", ">", "!", ",", ":", ".", "[?")
_AT_COLUMN = re.compile(r"^(?P<what>.*) at column (?P<column>\d+)$", re.DOTALL)


def explain_expression_error(raw: str, source: Optional[str] = None) -> Optional[Tuple[str, str]]:
    """(message, hint) in plain words for a JMESPath syntax error ``compile_expression``
    raised, with the column and a fix; None when the message is already plain."""
    if raw == "the expression ends too early":
        return _ends_early(source)
    found = _AT_COLUMN.match(raw)
    if not found:
        return None
    what, column = found["what"], int(found["column"])
    char = source[column - 1] if source and 0 < column <= len(source) else None
    expecting = re.match(r"Expecting: (?P<expected>.+), got: (?P<got>\w+)$", what)
    if expecting:
        return _expecting(expecting["expected"], expecting["got"], column, source)
    if what.startswith("Unexpected token: "):
        return _unexpected(what[len("Unexpected token: ") :], column, source)
    if what == "Unknown token '='":
        fixed = source[: column - 1] + "==" + source[column:] if char == "=" else None
        hint = "compare with ==" + (f": {fixed}" if fixed else "")
        return f"`=` at column {column} is not JMESPath", hint
    if what == "Unknown token '-'":
        return _dash(column, source)
    if what.startswith("Unknown token "):
        bad = what[len("Unknown token ") :].strip("'")
        message = f"`{bad}` at column {column} is not part of JMESPath"
        return message, f'remove it, or quote the name that holds it: "a{bad}b"'
    if what.startswith("Unclosed "):
        delimiter = what.split()[1]
        kind = {"'": "string", '"': "quoted name", "`": "literal"}.get(delimiter, "quote")
        message = f"the {kind} opened with {delimiter} at column {column} is never closed"
        hint = f"end it with {delimiter}"
        if delimiter == "'":
            hint += "; in YAML, write the whole expression in double quotes: \"'text'\""
        return message, hint
    if what.startswith("Bad token "):
        message = f"the `literal` at column {column} is not valid JSON"
        return message, "backquotes hold JSON (`1`, `[1, 2]`, `{\"a\": 1}`); a string is 'text'"
    if what in ("invalid token", "syntax error"):
        pair = source[column - 1 : column + 1] if source else ""
        shown = pair if pair in _OPERATORS else char
        message = f"`{shown}` cannot stand at column {column}" if shown else f"column {column}"
        hint = "an operator needs an expression on each side (a || b, a == b)"
        if what == "syntax error":
            hint = "a slice is [start:stop:step] with numbers only, e.g. [0:2]"
        elif source and source[max(0, column - 3) : column - 1] == ".[":
            hint = "an index follows the name directly: a[0], not a.[0]"
        return message, hint
    return None


def _expecting(expected: str, got: str, column: int, source: Optional[str]) -> Tuple[str, str]:
    token = _TOKENS.get(got, got)
    if "lbrace" in expected and "lbracket" in expected:  # after a dot
        dot = column - 1
        if got == "dot":
            hint = "`..` is not valid JMESPath: one dot joins two names"
            if source:
                hint += f"; write {source[: column - 1] + source[column - 1 :].lstrip('.')}"
            return f"two dots in a row at column {dot}", hint
        if got == "eof":
            hint = "a dot must be followed by a name"
            if source and source.rstrip().rstrip("."):
                hint += f": write {source.rstrip().rstrip('.')}, or finish the path"
            return f"the expression ends with a dot (column {dot})", hint
        hint = "after a dot comes a name, [a, b] or {a: b}"
        if got == "literal":
            hint += "; a `literal` stands on its own: `x`, not a.`x`"
        return f"a name must follow the dot at column {dot}, not {token}", hint
    if "quoted_identifier" in expected:  # a key of {…}
        hint = 'write {key: value}; a key holding other characters is quoted: {"first-name": a}'
        return f"an object key is expected at column {column}, not {token}", hint
    wanted = _TOKENS.get(expected, expected)
    if expected == "colon":
        return f"`:` expected at column {column}, not {token}", "write {key: value, other: b}"
    hint = "check that every (, [ and { before it is closed, in the right order"
    return f"{wanted} expected at column {column}, not {token}", hint


def _unexpected(token: str, column: int, source: Optional[str]) -> Tuple[str, str]:
    if token in (")", "]", "}"):
        opening = {")": "(", "]": "[", "}": "{"}[token]
        return f"`{token}` at column {column} closes nothing", f"remove it, or add its {opening}"
    if token == ":":
        message = f"`:` at column {column} is outside {{…}}"
        return message, 'key: value pairs go inside {…}; in YAML, quote it all: "{a: b.c}"'
    if token == ",":
        return f"`,` at column {column} is outside a list or an object", "write [a, b] or {x: a}"
    before = source[: column - 1] if source else ""
    previous = re.search(r"(\S+)\s+$", before)
    if previous:
        left = previous.group(1)
        message = f"`{token}` at column {column} follows `{left}` with nothing joining them"
        hint = (
            f"join them with an operator: {left}.{token} for a path, {left} || {token} for "
            f'either; a key holding a space is quoted: "{left} {token}"'
        )
        return message, hint
    hint = "the expression before it is complete: join what follows with an operator, or remove it"
    return f"unexpected `{token}` at column {column}", hint


def _dash(column: int, source: Optional[str]) -> Tuple[str, str]:
    message = f"`-` at column {column}: a name holding `-` must be quoted"
    if not source or column > len(source):
        return message, 'quote it: "first-name"'
    if source[column - 2 : column - 1].isspace() or source[column : column + 1].isspace():
        message = f"`-` at column {column}: JMESPath has no arithmetic"
        return message, 'compute it in the assistant; a name holding `-` is quoted: "first-name"'
    start = end = column - 1
    while start > 0 and (source[start - 1].isalnum() or source[start - 1] in "_-"):
        start -= 1
    while end + 1 < len(source) and (source[end + 1].isalnum() or source[end + 1] in "_-"):
        end += 1
    fixed = f'{source[:start]}"{source[start : end + 1]}"{source[end + 1 :]}'
    return message, f"write {fixed} (in YAML: {_quoted(fixed)})"


def _ends_early(source: Optional[str]) -> Tuple[str, str]:
    if source:
        opened = _unclosed(source)
        if opened is not None:
            char, column = opened
            message = f"the expression ends before the {char} at column {column} is closed"
            return message, f"close it with {_CLOSING.get(char, char)}"
        tail = source.rstrip()
        for operator in _OPERATORS:
            if tail.endswith(operator):
                return (
                    f"the expression ends after `{operator}`",
                    "add what follows it, or remove it",
                )
    hint = "something is not finished: a bracket, a quote or an operator"
    return "the expression ends too early", hint


def _unclosed(source: str) -> Optional[Tuple[str, int]]:
    """The last bracket (or quote) still open at the end of ``source``, with its column."""
    stack: List[Tuple[str, int]] = []
    quote: Optional[Tuple[str, int]] = None
    escaped = False
    for index, char in enumerate(source):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote[0]:
                quote = None
        elif char in "'\"`":
            quote = (char, index + 1)
        elif char in _CLOSING:
            stack.append((char, index + 1))
        elif char in ")]}" and stack and _CLOSING[stack[-1][0]] == char:
            stack.pop()
    if quote is not None:
        return quote
    return stack[-1] if stack else None


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
        "slack, ...), and keys written here replace the same keys of that file."
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
