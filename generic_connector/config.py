"""The one config loader and validator, shared by ``rasa run`` start-up and the CLI.

A channel is configured by a credentials.yml entry, optionally completed by a mapping file
it names with ``mapping:``. Both are checked against ``schema.json``; every expression is
compiled; all problems are reported at once, each located by file, line and key path.
"""

import difflib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

import jsonschema
import yaml

from generic_connector.auth import Auth
from generic_connector.errors import ConfigError, Finding
from generic_connector.functions import REQUEST_FUNCTIONS
from generic_connector.mapping import (
    Expression,
    ExpressionError,
    Handshake,
    RequestMapping,
    ResponseTemplate,
    compile_expression,
    json_type,
    nodes,
)
from generic_connector.outbound import KINDS, Outbound

SCHEMA_PATH = Path(__file__).with_name("schema.json")
SCHEMA: Dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

_format_checker = jsonschema.FormatChecker()
_format_checker.checks("jmespath", raises=ExpressionError)(
    lambda value: not isinstance(value, str) or bool(compile_expression(value))
)
_VALIDATOR = jsonschema.Draft7Validator(SCHEMA, format_checker=_format_checker)

Position = Tuple[Optional[str], int, int]


class LocatedDict(dict):
    """A YAML mapping that remembers where each of its keys was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positions: Dict[Any, Position] = {}


class _LocatingLoader(yaml.SafeLoader):
    file: Optional[str] = None


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        mark = key_node.start_mark
        result.positions[key] = (loader.file, mark.line + 1, mark.column + 1)
    return result


_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    """Load a YAML file keeping key positions; raise ConfigError with a finding if unreadable."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError([Finding("", f"cannot read file: {error.strerror}", file=file)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Finding("", "not a text file (not UTF-8)", file=file)]) from None
    loader = _LocatingLoader(text)
    loader.file = file
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            [
                Finding(
                    "",
                    f"not valid YAML: {problem}",
                    file=file,
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                )
            ]
        ) from None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class ChannelConfig:
    """A validated, compiled channel: what ``GenericChannel`` is built from."""

    name: str
    request: RequestMapping
    response: ResponseTemplate
    handshakes: List[Handshake]
    outbound: Optional[Outbound] = None
    auth: Optional[Auth] = None
    max_body: int = 1_048_576
    idempotency_window: float = 3600
    idempotency_max_keys: int = 100_000

    def expressions(self) -> List[Expression]:
        found = self.request.expressions() + [self.response.body]
        found += self.outbound.expressions() if self.outbound else []
        return found + [e for h in self.handshakes for e in h.expressions()]

    @cached_property
    def binds_request(self) -> bool:
        """Whether any expression calls header(), query() or body()."""
        return any(expression.reads_request for expression in self.expressions())

    def env_names(self) -> List[str]:
        """Environment variables the channel needs: env('NAME') and the auth secrets."""
        names = {name for e in self.expressions() for name in e.env_names}
        return sorted(names | set(self.auth.env_names() if self.auth else []))

    def routes(self) -> List[Tuple[str, str]]:
        """(method, path) pairs the channel serves: POST /webhook and its handshakes'."""
        routes = [("POST", "/webhook")]
        routes += [(h.method, h.path) for h in self.handshakes if (h.method, h.path) not in routes]
        return routes


def locate(document: Any, path: Iterable[Any]) -> Optional[Position]:
    """The position of the deepest key along ``path`` that the document knows."""
    found = None
    node = document
    for key in path:
        if not isinstance(node, (dict, list)):
            break
        if isinstance(node, dict):
            if key not in node:
                break
            found = getattr(node, "positions", {}).get(key, found)
        elif not (isinstance(key, int) and key < len(node)):
            break
        node = node[key]
    return found


def _dotted(prefix: str, path: Iterable[Any]) -> str:
    text = prefix
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
    return text


def _describe(error: jsonschema.ValidationError) -> Tuple[List[Any], str, str]:
    """Turn a schema error into (key path, message, hint) a person can act on."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        key = extra[0]
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        return path + [key], f"unknown key '{key}'", hint
    if error.validator == "required":
        key = error.message.split("'")[1]
        return path + [key], f"missing required key '{key}'", "add it"
    if error.validator == "type":
        expected = error.validator_value
        return path, f"must be {_json_type_name(expected)}, got {json_type(error.instance)}", ""
    if error.validator == "format" and error.cause is not None:
        return path, f"expression does not compile: {error.cause}", "fix the JMESPath expression"
    if error.validator == "pattern":
        message = f"{error.instance!r} does not match {error.validator_value}"
        return path, message, error.schema.get("x-hint", "")
    return path, error.message, error.schema.get("x-hint", "")


def _json_type_name(expected: Any) -> str:
    names = {"string": "a string", "object": "an object", "integer": "an integer"}
    if isinstance(expected, list):
        return " or ".join(names.get(t, t) for t in expected)
    return names.get(expected, expected)


def _merge(entry: Dict[str, Any], base_dir: Path) -> Tuple[LocatedDict, List[Finding]]:
    """The entry completed by its mapping file; keys given in the entry win."""
    merged = LocatedDict()
    findings: List[Finding] = []
    mapping_ref = entry.get("mapping")
    if isinstance(mapping_ref, str) and mapping_ref:
        path = Path(mapping_ref)
        if not path.is_absolute():
            path = Path(os.path.relpath(base_dir / path))
        position = getattr(entry, "positions", {}).get("mapping", (None, None, None))
        if not path.is_file():
            findings.append(
                Finding(
                    "mapping",
                    f"mapping file {mapping_ref!r} not found",
                    "relative paths start from the directory rasa run is started in",
                    *position,
                )
            )
        else:
            try:
                document = load_yaml(path)
            except ConfigError as error:
                return merged, error.findings
            if not isinstance(document, dict):
                message = f"must be a mapping of keys, got {json_type(document)}"
                findings.append(Finding("", message, file=str(path)))
            else:
                # A mapping file's test cases describe that file; they run when it is validated.
                merged.update((k, v) for k, v in document.items() if k != "tests")
                merged.positions.update(getattr(document, "positions", {}))
    for key, value in entry.items():
        if key != "mapping" or not isinstance(value, str):
            merged[key] = value
            merged.positions.pop(key, None)
            if key in getattr(entry, "positions", {}):
                merged.positions[key] = entry.positions[key]
    return merged, findings


class Checked(NamedTuple):
    """The outcome of checking one channel: the config when valid, else the findings."""

    config: Optional[ChannelConfig]
    findings: List[Finding]
    document: Dict[str, Any]


def check_channel(
    entry: Any,
    label: str = "",
    base_dir: Optional[Path] = None,
    origin: Position = (None, None, None),
    require_env: bool = False,
) -> Checked:
    """Validate a credentials entry or a mapping file's content, with its mapping file.

    ``label`` names the channel in messages until its own ``name`` is known; ``origin`` is
    where the entry itself starts (file, line, column), used for problems of the whole entry.
    ``require_env``: environment variables the mapping reads must be set (at start-up).
    """
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        message = f"must be a mapping of keys, got {json_type(entry)}"
        return Checked(None, [Finding(label, message, "", *origin)], {})
    merged, findings = _merge(entry, base_dir or Path.cwd())
    if findings and not merged:
        return Checked(None, findings, merged)
    name = merged.get("name")
    prefix = name if isinstance(name, str) and name else label
    for error in _VALIDATOR.iter_errors(merged):
        path, message, hint = _describe(error)
        where = locate(merged, path) or origin
        findings.append(Finding(_dotted(prefix, path), message, hint, *where))
    if not findings:
        for path, message, hint in _outbound_problems(merged.get("outbound")):
            where = locate(merged, path) or origin
            findings.append(Finding(_dotted(prefix, path), message, hint, *where))
    if findings:
        findings.sort(key=lambda f: (f.file or "", f.line or 0, f.column or 0))
        return Checked(None, findings, merged)
    config = _build(merged)
    if require_env:
        missing = [name for name in config.env_names() if name not in os.environ]
        if missing:
            message = (
                f"environment variable {missing[0]} is not set"
                if len(missing) == 1
                else f"environment variables {', '.join(missing)} are not set"
            )
            hint = "the mapping reads it; set it before rasa run starts"
            return Checked(None, [Finding(f"{prefix}", message, hint, *origin)], merged)
    return Checked(config, [], merged)


_REQUEST_DATA_FIELDS = {"event", "metadata"}


def _outbound_problems(section: Optional[Dict[str, Any]]) -> List[Tuple[List[Any], str, str]]:
    """Templates that cannot give a request, and URLs from request data with no allow-list."""
    problems: List[Tuple[List[Any], str, str]] = []
    if not section:
        return problems
    defaults = section.get("defaults", {})
    for kind in KINDS:
        if kind not in section:
            continue
        template = {**defaults, **section[kind]}
        if "url" not in template:
            hint = "give it here or in outbound.defaults"
            problems.append((["outbound", kind], "no url for this kind of message", hint))
        elif "allow_hosts" not in section and _reads_request(template["url"]):
            where = ["outbound", kind if "url" in section[kind] else "defaults", "url"]
            hint = "list the hosts it may call in outbound.allow_hosts"
            problems.append((where, "the URL is built from request data", hint))
    return problems


def _reads_request(expression: str) -> bool:
    return any(
        (node["type"] == "field" and node["value"] in _REQUEST_DATA_FIELDS)
        or (node["type"] == "function_expression" and node["value"] in REQUEST_FUNCTIONS)
        for node in nodes(compile_expression(expression).parsed)
    )


def _build(document: Dict[str, Any]) -> ChannelConfig:
    name = document["name"]
    handshakes = [
        Handshake(
            name=spec["name"],
            method=spec.get("method", "POST"),
            path=spec.get("path", "/webhook"),
            when=Expression(spec["when"]) if "when" in spec else None,
            verify=Expression(spec["verify"]) if "verify" in spec else None,
            response=ResponseTemplate(**spec["response"]),
        )
        for spec in document.get("handshakes", [])
    ]
    return ChannelConfig(
        name=name,
        request=RequestMapping(default_input_channel=name, **document["request"]),
        response=ResponseTemplate(**document.get("response", {})),
        handshakes=handshakes,
        outbound=Outbound.from_config(document["outbound"]) if "outbound" in document else None,
        auth=Auth(**document["auth"]) if "auth" in document else None,
        max_body=document.get("limits", {}).get("max_body", 1_048_576),
        idempotency_window=document.get("idempotency", {}).get("window", 3600),
        idempotency_max_keys=document.get("idempotency", {}).get("max_keys", 100_000),
    )


def load_channel(entry: Any, label: str = "") -> ChannelConfig:
    """Validate and compile a channel; raise ConfigError listing every finding."""
    config, findings, _ = check_channel(entry, label, require_env=True)
    if config is None:
        raise ConfigError(findings)
    return config
