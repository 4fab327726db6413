"""The one config loader and validator, shared by ``rasa run`` start-up and the CLI.

A channel is configured by a credentials.yml entry, optionally completed by a mapping file
it names with ``mapping:``. Both are checked against ``schema.json``; every expression is
compiled; all problems are reported at once, each located by file, line and key path.
"""

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import jsonschema

from generic_connector import defaults
from generic_connector.answers import (
    ANSWER_FORMATS,
    RESERVED_HEADERS,
    Deferral,
    ResponseChoice,
    ResponseTemplate,
    build_response,
    header_name_problem,
    header_text,
    header_value_problem,
)
from generic_connector.auth import AuthScheme, auth_schema, build_auth
from generic_connector.compiler import Tree
from generic_connector.errors import ConfigError, Finding, FindingCode
from generic_connector.expressions import (
    Expression,
    ExpressionError,
    compile_expression,
    json_type,
    nodes,
)
from generic_connector.functions import REQUEST_FUNCTIONS
from generic_connector.handover import Handover
from generic_connector.handshakes import Handshake
from generic_connector.mapping import RequestMapping
from generic_connector.outbound import (
    KINDS,
    STEP_NAME_SCHEMA,
    Outbound,
    RequestTemplate,
    body_format_schema,
    template_schemas,
)
from generic_connector.routes import DEFAULT as DEFAULT_ROUTE
from generic_connector.routes import Route
from generic_connector.stores import BACKENDS
from generic_connector.tokens import TokenSpec, build_specs
from generic_connector.yamlfile import LocatedDict, Position, load_yaml, locate

SCHEMA_PATH = Path(__file__).with_name("schema.json")
MAX_SIZE_SCHEMA = {
    "type": "integer",
    "minimum": 1,
    "maximum": 20_971_520,
    "description": f"Bytes of an attachment kept, default {defaults.MAX_ATTACHMENT}.",
}
SCHEMA: Dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _registered(schema: Dict[str, Any]) -> Dict[str, Any]:
    """The schema with the registries' names and fragments written in.

    Registries are where auth schemes, answer formats and stores are added; schema.json,
    which editors read, is held to this by a test (``generic-connector schema --write``).
    """
    schema = json.loads(json.dumps(schema))
    schema["properties"]["auth"] = auth_schema()
    schema["properties"]["store"]["properties"]["type"]["enum"] = sorted(BACKENDS)
    for answer in ("response", "response_choice"):
        schema["definitions"][answer]["properties"]["format"]["enum"] = sorted(ANSWER_FORMATS)
    outbound = schema["properties"]["outbound"]
    outbound.pop("required", None)  # text or turn: the loader says which is missing
    outbound["properties"].update(template_schemas())
    outbound["properties"]["renders"]["items"]["enum"] = list(KINDS)
    schema["definitions"]["outbound_request"]["properties"]["content_type"] = body_format_schema()
    fetch = schema["properties"]["request"]["properties"]["fetch"]["items"]["properties"]
    fetch["content_type"] = body_format_schema()
    # A download is a fetch without a name or body, and with the size kept.
    download = schema["properties"]["request"]["properties"]["download"]
    download["properties"] = {
        key: value for key, value in fetch.items() if key not in ("name", "body", "content_type")
    }
    download["properties"]["max_size"] = MAX_SIZE_SCHEMA
    # A step is a request of its own, with a name for its answer (and no steps of its own).
    request = schema["definitions"]["outbound_request"]
    step = json.loads(json.dumps(request))
    del step["properties"]["steps"]
    step["properties"] = {"name": STEP_NAME_SCHEMA, **step["properties"]}
    step["required"] = ["name", "url"]
    request["properties"]["steps"]["items"] = step
    # A setup request (``generic-connector setup``) is such a step, judged by its own success.
    setup = json.loads(json.dumps(step))
    setup["properties"]["name"] = {**STEP_NAME_SCHEMA, "description": SETUP_NAME}
    setup["properties"]["success"] = {"description": SETUP_SUCCESS, **_EXPRESSION_REF}
    schema["properties"]["setup"]["items"] = setup
    return schema


SETUP_NAME = "The request's name, shown in the command's output (e.g. setWebhook)."
SETUP_SUCCESS = (
    "An expression over the platform's 2xx answer (its JSON) that must be true for the "
    "request to count as done, e.g. ok (Telegram) or status == `0` (Viber); without it, any "
    "2xx is."
)
_EXPRESSION_REF = {"$ref": "#/definitions/expression"}


def write_schema(path: Path = SCHEMA_PATH) -> None:
    """Write the schema, with every registry's names and fragments, where editors read it."""
    text = json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


SCHEMA = _registered(SCHEMA)

_format_checker = jsonschema.FormatChecker()
_format_checker.checks("jmespath", raises=ExpressionError)(
    lambda value: not isinstance(value, str) or bool(compile_expression(value))
)
_VALIDATOR = jsonschema.Draft7Validator(SCHEMA, format_checker=_format_checker)


@dataclass(frozen=True)
class Limits:
    """``limits``: what one request may hold and take."""

    max_body: int = defaults.MAX_BODY
    read_timeout: float = defaults.READ_TIMEOUT
    max_concurrent: int = defaults.MAX_CONCURRENT
    max_events: int = defaults.MAX_EVENTS
    max_form_fields: int = defaults.MAX_FORM_FIELDS


@dataclass(frozen=True)
class Idempotency:
    """``idempotency``: how long handled message ids are remembered."""

    window: float = defaults.IDEMPOTENCY_WINDOW
    max_keys: int = defaults.IDEMPOTENCY_MAX_KEYS


@dataclass(frozen=True)
class Store:
    """``store``: where de-duplication and pending deliveries live — this process's memory,
    or Redis, shared by every replica (and every channel of a process, one pool per URL)."""

    type: str = defaults.STORE
    url_env: Optional[str] = None
    prefix: str = defaults.STORE_PREFIX
    visibility_timeout: float = defaults.VISIBILITY_TIMEOUT
    running_timeout: float = defaults.RUNNING_TIMEOUT

    @property
    def url(self) -> str:
        return os.environ.get(self.url_env or "", "")


@dataclass(frozen=True)
class ChannelConfig:
    """A validated, compiled channel: what ``GenericChannel`` is built from."""

    name: str
    request: RequestMapping
    response: Union[ResponseTemplate, ResponseChoice]
    handshakes: List[Handshake]
    outbound: Optional[Outbound] = None
    auth: Optional[AuthScheme] = None
    limits: Limits = Limits()
    idempotency: Idempotency = Idempotency()
    store: Store = Store()
    auth_section: Any = None  # the auth scheme's keys, to build it again (test cases' env)
    defer: Optional[Deferral] = None
    # (method, path) pairs that carry messages: POST /webhook and ``routes:``.
    message_routes: Tuple[Route, ...] = (DEFAULT_ROUTE,)
    # ``tokens``: access tokens from a token endpoint, by name.
    tokens: Dict[str, TokenSpec] = dataclasses.field(default_factory=dict)
    # ``handover``: the bot paused for a conversation while a human agent answers.
    handover: Optional[Handover] = None
    # ``setup``: the requests that register the webhook (``generic-connector setup``).
    setup: Tuple[RequestTemplate, ...] = ()

    def expressions(self) -> List[Expression]:
        found = self.request.expressions() + self.response.expressions()
        found += [e for template in self.setup for e in template.expressions()]
        found += [e for spec in self.tokens.values() for e in spec.expressions()]
        found += self.defer.expressions() if self.defer else []
        found += self.outbound.expressions() if self.outbound else []
        found += self.handover.expressions() if self.handover else []
        return found + [e for h in self.handshakes for e in h.expressions()]

    @cached_property
    def binds_request(self) -> bool:
        """Whether any expression calls header(), query() or body()."""
        return any(expression.reads_request for expression in self.expressions())

    def env_names(self) -> List[str]:
        """Environment variables the channel needs: env('NAME') and the auth secrets."""
        names = {name for e in self.expressions() for name in e.env_names}
        names |= {self.store.url_env} if self.store.url_env else set()
        return sorted(names | set(self.auth.env_names() if self.auth else []))

    def routes(self) -> List[Route]:
        """(method, path template) pairs the channel serves: those that carry messages, then
        its handshakes'."""
        routes = list(self.message_routes)
        routes += [(h.method, h.path) for h in self.handshakes if (h.method, h.path) not in routes]
        return routes


class Problem(NamedTuple):
    """A problem of a channel's document before it is located: a Finding's code, key path
    (from the channel's top), message and hint."""

    code: FindingCode
    path: List[Any]
    message: str
    hint: str


def _dotted(prefix: str, path: Iterable[Any]) -> str:
    text = prefix
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
    return text


def _describe(error: jsonschema.ValidationError) -> Problem:
    """Turn a schema error into a problem a person can act on."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        key = extra[0]
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        return Problem("unknown-key", path + [key], f"unknown key '{key}'", hint)
    if error.validator == "required":
        key = error.message.split("'")[1]
        return Problem("missing-key", path + [key], f"missing required key '{key}'", "add it")
    if error.validator == "type":
        expected = error.validator_value
        message = f"must be {_json_type_name(expected)}, got {json_type(error.instance)}"
        return Problem("wrong-type", path, message, "")
    if error.validator == "format" and isinstance(error.cause, ExpressionError):
        code: FindingCode = "expression-syntax" if error.cause.syntax else "expression-invalid"
        message = f"expression does not compile: {error.cause}"
        return Problem(code, path, message, "fix the JMESPath expression")
    if error.validator == "pattern":
        message = f"{error.instance!r} does not match {error.validator_value}"
        return Problem("invalid-value", path, message, error.schema.get("x-hint", ""))
    return Problem("invalid-value", path, error.message, error.schema.get("x-hint", ""))


def _json_type_name(expected: Any) -> str:
    names = {"string": "a string", "object": "an object", "integer": "an integer"}
    if isinstance(expected, list):
        types: List[str] = expected
        return " or ".join(names.get(t, t) for t in types)
    return names.get(expected, expected)


def _merge(entry: Dict[str, Any], base_dir: Path) -> Tuple[LocatedDict, List[Finding]]:
    """The entry completed by its mapping file: objects merge key by key (``_overlay``).

    ``mapping:`` is a file (relative paths start from ``base_dir``) or, when no such file
    exists, the name of a ready mapping shipped inside the package (``mapping: telegram``).
    """
    merged = LocatedDict()
    findings: List[Finding] = []
    mapping_ref = entry.get("mapping")
    if isinstance(mapping_ref, str) and mapping_ref:
        position = getattr(entry, "positions", {}).get("mapping", (None, None, None))
        path = resolve_mapping(mapping_ref, base_dir)
        if path is None:
            message, hint = _mapping_not_found(mapping_ref)
            findings.append(Finding("mapping-not-found", "mapping", message, hint, *position))
        else:
            try:
                document = load_yaml(path)
            except ConfigError as error:
                return merged, error.findings
            if not isinstance(document, dict):
                message = f"must be a mapping of keys, got {json_type(document)}"
                findings.append(Finding("not-a-mapping", "", message, file=str(path)))
            else:
                # A mapping file's test cases describe that file; they run when it is validated.
                positions = getattr(document, "positions", {})
                for key, value in document.items():
                    if key != "tests":
                        merged[key] = value
                        if key in positions:
                            merged.positions[key] = positions[key]
    own = {k: v for k, v in entry.items() if k != "mapping" or not isinstance(v, str)}
    if not merged:  # no mapping file: the entry as it is written
        merged.update(own)
        merged.positions.update(getattr(entry, "positions", {}))
        merged.positions.pop("mapping", None)
        return merged, findings
    located = LocatedDict(own)
    located.positions.update(getattr(entry, "positions", {}))
    return _overlay(merged, located), findings


# Sections an entry replaces whole: an auth scheme's keys belong together (a key source of the
# entry's and another of the mapping's would both apply).
REPLACED_WHOLE = ("auth",)


def _overlay(
    base: Dict[str, Any], over: Dict[str, Any], whole: Tuple[str, ...] = REPLACED_WHOLE
) -> LocatedDict:
    """``over`` written over ``base``, key by key at every depth: an object merges with the
    object it meets, unless their ``type`` differs or the key is one of ``whole`` (top level:
    ``auth``); anything else (a list, a value) replaces; null removes the key. Each key keeps
    the position of the file its value comes from."""
    result = LocatedDict()
    base_positions: Dict[Any, Position] = getattr(base, "positions", {})
    over_positions: Dict[Any, Position] = getattr(over, "positions", {})
    for key, value in base.items():
        result[key] = value
        if key in base_positions:
            result.positions[key] = base_positions[key]
    for key, value in over.items():
        mine = result.get(key)
        if value is None:
            result.pop(key, None)
            result.positions.pop(key, None)
            continue
        mergeable = key not in whole and _same_type(mine, value)
        if isinstance(value, dict) and isinstance(mine, dict) and mergeable:
            result[key] = _overlay(mine, value, ())
        else:
            result[key] = value
        result.positions.pop(key, None)
        if key in over_positions:
            result.positions[key] = over_positions[key]
    return result


def _same_type(base: Any, over: Any) -> bool:
    """Whether two objects may merge: ``over`` names no ``type``, or the same one."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return False
    return "type" not in over or base.get("type") == over.get("type")


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
        return Checked(None, [Finding("not-a-mapping", label, message, "", *origin)], {})
    merged, findings = _merge(entry, base_dir or Path.cwd())
    if findings and not merged:
        return Checked(None, findings, merged)
    name = merged.get("name")
    prefix = name if isinstance(name, str) and name else label
    for error in _VALIDATOR.iter_errors(merged):
        code, path, message, hint = _describe(error)
        where = locate(merged, path) or origin
        cause = error.cause if isinstance(error.cause, ExpressionError) else error
        findings.append(Finding(code, _dotted(prefix, path), message, hint, *where, cause=cause))
    if not findings:
        problems = _outbound_problems(merged.get("outbound"))
        problems += _fetch_problems(merged.get("request", {}).get("fetch"))
        download = merged.get("request", {}).get("download")
        if download and "allow_hosts" not in download and _reads_request(download["url"]):
            hint = "list the hosts it may call in allow_hosts"
            message = "the URL's host is built from request data"
            problems.append(
                Problem("url-from-request", ["request", "download", "url"], message, hint)
            )
        problems += _token_problems(merged)
        problems += _setup_problems(merged)
        problems += _answer_header_problems(merged)
        problems += _handover_problems(merged)
        store = merged.get("store", {})
        backend = BACKENDS[store.get("type", defaults.STORE)]
        shared = backend.shared
        if merged["request"].get("ack") == "early" and not backend.inbox:
            hint = "early acknowledgement stores the messages: set store: {type: redis, ...}"
            problems.append(
                Problem("needs-shared-store", ["request", "ack"], "needs a shared store", hint)
            )
        if shared and "url_env" not in store:
            hint = "name the environment variable that holds the URL, e.g. REDIS_URL"
            problems.append(
                Problem("missing-url-env", ["store"], "a shared store needs url_env", hint)
            )
        if "defer" in merged and "outbound" not in merged:
            hint = "add an outbound section for the replies that come after the answer"
            problems.append(
                Problem("needs-outbound", ["defer"], "deferred replies need outbound", hint)
            )
        for code, path, message, hint in problems:
            where = locate(merged, path) or origin
            findings.append(Finding(code, _dotted(prefix, path), message, hint, *where))
    if findings:
        findings.sort(key=lambda f: (f.file or "", f.line or 0, f.column or 0))
        return Checked(None, findings, merged)
    config = _build(merged)
    if require_env:
        env_problems = environment_problems(config)
        if env_problems:
            found = [
                Finding(code, prefix, message, hint, *origin)
                for code, message, hint in env_problems
            ]
            return Checked(None, found, merged)
    return Checked(config, [], merged)


def environment_problems(config: ChannelConfig) -> List[Tuple[FindingCode, str, str]]:
    """(code, message, hint) for variables the channel reads that are unset, empty secrets
    and secrets the auth scheme cannot use."""
    problems: List[Tuple[FindingCode, str, str]] = []
    missing = [name for name in config.env_names() if name not in os.environ]
    if missing:
        message = (
            f"environment variable {missing[0]} is not set"
            if len(missing) == 1
            else f"environment variables {', '.join(missing)} are not set"
        )
        problems.append(
            ("missing-env", message, "the mapping reads it; set it before rasa run starts")
        )
    secrets = config.auth.env_names() if config.auth else []
    for name in secrets:
        if os.environ.get(name) == "":
            message = f"environment variable {name} is empty"
            hint = "a secret must not be empty; set it to the platform's"
            problems.append(("empty-secret", message, hint))
    for problem in config.auth.problems() if config.auth else []:
        if not problem.endswith((" is not set", " is empty")):  # said above
            problems.append(("invalid-secret", f"auth: {problem}", "fix the secret's value"))
    return problems


# Request data in outbound templates: every field (the templates see {message(s), recipient,
# event, metadata}, all from the conversation), the current node `@`, and header(), query(),
# body(). env() and literals are the operator's.
_DATA_NODES = {"field", "current"}
# What ends a URL's authority: once one follows "://" in fixed text, the host is fixed.
_AUTHORITY_END = "/?#\\"


def _outbound_problems(section: Optional[Dict[str, Any]]) -> List[Problem]:
    """Templates that cannot give a request, names that are not registered, and URLs whose host
    comes from request data with no allow-list."""
    from generic_connector.outbound import (
        BODY_FORMATS,
        HEADER_NAME,
        OPTIONS,
        PRESENCE,
        TURN,
        merge_defaults,
    )

    problems: List[Problem] = []
    if not isinstance(section, dict) or not section:
        return problems

    def add(code: FindingCode, path: List[Any], message: str, hint: str) -> None:
        problem = Problem(code, path, message, hint)
        if problem not in problems:  # a default shared by several kinds: once
            problems.append(problem)

    def check_header(path: List[Any]) -> None:
        if not HEADER_NAME.match(str(path[-1])):
            hint = "letters, digits and !#$%&'*+-.^_`|~ only"
            add("invalid-header-name", path, "not a valid header name", hint)

    problems += _allow_hosts_problems(["outbound", "allow_hosts"], section.get("allow_hosts"))
    defaults = section.get("defaults") or {}
    kinds = [kind for kind in KINDS if kind in section]
    for key in section:
        if key not in kinds and key not in OPTIONS and key not in (TURN, PRESENCE, "defaults"):
            hint = f"message kinds: {', '.join(KINDS)}; or {TURN} for one request per turn"
            add("unknown-kind", ["outbound", key], f"unknown message kind '{key}'", hint)
    if TURN in section:
        for kind in kinds:
            message = f"outbound.{TURN} sends all the replies of a turn, so this is never used"
            add("unused-template", ["outbound", kind], message, f"remove it, or outbound.{TURN}")
    elif "text" not in section:
        hint = f"add outbound.text, or outbound.{TURN} for one request per turn"
        add("missing-template", ["outbound"], "no template for text messages", hint)
    renders = [] if TURN in section else section.get("renders") or []
    for index, kind in enumerate(renders):
        if kind not in kinds:  # shown by the platform, but nothing here sends it
            message = f"{kind} messages are rendered, but there is no outbound.{kind} template"
            hint = f"add outbound.{kind}, or leave {kind} out of renders to send it as text"
            add("renders-without-template", ["outbound", "renders", index], message, hint)
    for name in kinds + [key for key in (TURN, PRESENCE) if key in section]:
        own = section[name] if isinstance(section[name], dict) else {}
        template = merge_defaults(defaults, own)

        def where(key: str) -> List[Any]:
            return ["outbound", name if key in own else "defaults", key]  # noqa: B023

        if "url" not in template:
            what = "the turn's request" if name == TURN else "this kind of message"
            hint = "give it here or in outbound.defaults"
            add("missing-url", ["outbound", name], f"no url for {what}", hint)
        elif "allow_hosts" not in section and _reads_request(template["url"]):
            hint = "list the hosts it may call in outbound.allow_hosts"
            add("url-from-request", where("url"), "the URL is built from request data", hint)
        content_type = template.get("content_type", "json")
        if content_type not in BODY_FORMATS:
            hint = f"one of: {', '.join(BODY_FORMATS)}"
            message = f"unknown body format {content_type!r}"
            add("unknown-body-format", where("content_type"), message, hint)
        for header in template.get("headers") or {}:
            owner = name if header in own.get("headers", {}) else "defaults"
            check_header(["outbound", owner, "headers", header])
        names: List[str] = []
        for index, step in enumerate(own.get("steps") or []):
            at: List[Any] = ["outbound", name, "steps", index]
            if step["name"] in names:
                message = f"step {step['name']!r} is declared twice"
                add("duplicate-step", at + ["name"], message, "give each step its own name")
            names.append(step["name"])
            if "allow_hosts" not in section and _reads_request(step["url"]):
                hint = "list the hosts it may call in outbound.allow_hosts"
                add("url-from-request", at + ["url"], "the URL is built from request data", hint)
            for header in step.get("headers") or {}:
                check_header(at + ["headers", header])
    return problems


def _allow_hosts_problems(path: List[Any], entries: Any) -> List[Problem]:
    """``allow_hosts`` entries that are no ``host`` or ``host:port``."""
    from generic_connector.outbound import HostAllowList

    problems: List[Problem] = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            HostAllowList([entry])
        except ValueError as error:
            hint = "write host (the scheme's default port) or host:port, e.g. 127.0.0.1:8080"
            wildcard = "no wildcards" in str(error)
            message = str(error) if wildcard else f"{entry!r} is not a host or host:port"
            problems.append(Problem("invalid-host", path + [index], message, hint))
    return problems


def _answer_header_problems(document: Dict[str, Any]) -> List[Problem]:
    """Headers of answer templates (``response``, ``defer.response``, the handshakes') whose
    name cannot be set, or whose value is no expression that can give one. Header values are
    expressions: a fixed value written without quotes (``text/xml``, ``nosniff``) is shown
    how to write it as a literal."""
    response = document.get("response")
    templates: List[Tuple[List[Any], Any]] = (
        [(["response", i], t) for i, t in enumerate(response)]
        if isinstance(response, list)
        else [(["response"], response)]
    )
    templates.append((["defer", "response"], (document.get("defer") or {}).get("response")))
    for index, handshake in enumerate(document.get("handshakes") or []):
        templates.append((["handshakes", index, "response"], handshake.get("response")))
    problems: List[Problem] = []
    for where, template in templates:
        headers = template.get("headers") if isinstance(template, dict) else None
        for name, value in (headers or {}).items():
            path = where + ["headers", name]
            problem = header_name_problem(name)
            if problem is not None:
                hint = _RESERVED_HINTS.get(str(name).lower(), _HEADER_NAME_HINT)
                problems.append(Problem("invalid-header-name", path, problem, hint))
            problems += _header_value_problems(path, name, value)
    return problems


_HEADER_NAME_HINT = "letters, digits and !#$%&'*+-.^_`|~ only"
_RESERVED_HINTS = {name: "remove it" for name in RESERVED_HEADERS}
_RESERVED_HINTS["content-type"] = "give it as the template's content_type"
# What an answer template's expressions read: {messages, request, sender}.
_ANSWER_DATA = ("messages", "request", "sender")
# Nodes whose first child is what they apply to: the leftmost name of a path is under them.
_APPLIED = ("subexpression", "index_expression", "projection", "filter_projection",
            "value_projection", "flatten")  # fmt: skip


def _header_value_problems(path: List[Any], name: Any, value: Any) -> List[Problem]:
    """An answer header's value that does not compile, reads a name the answer's data does not
    have (always null: the header would never be sent), or is a literal that cannot be sent."""
    if not isinstance(value, str):
        return []  # the schema says what it must be
    literal = "'" + value.replace("'", "\\'") + "'"
    hint = (
        "header values are JMESPath expressions; write a fixed value as a literal: "
        f"{name}: {json.dumps(literal, ensure_ascii=False)}"
    )
    try:
        tree: Tree = compile_expression(value).parsed
    except ExpressionError as error:
        code: FindingCode = "expression-syntax" if error.syntax else "expression-invalid"
        return [Problem(code, path, f"expression does not compile: {error}", hint)]
    node = tree
    while node["type"] in _APPLIED:
        node = node["children"][0]
    if node["type"] == "field" and node["value"] not in _ANSWER_DATA:
        message = (
            f"`{value}` reads {node['value']!r}, which the answer's data "
            "({messages, request, sender}) does not have: the header would never be sent"
        )
        return [Problem("expression-invalid", path, message, hint)]
    if tree["type"] in ("literal", "raw_string"):
        text = header_text(tree["value"])
        problem = header_value_problem(text) if text is not None else None
        if problem is not None:
            return [Problem("invalid-value", path, f"the value cannot be sent: {problem}", "")]
    return []


def _handover_problems(document: Dict[str, Any]) -> List[Problem]:
    """``handover.relay`` goes through outbound: it needs the section, and a name must be
    one of its templates; an inline relay is one request (no steps)."""
    relay = document.get("handover", {}).get("relay")
    outbound = document.get("outbound")
    path: List[Any] = ["handover", "relay"]
    if relay is None:
        return []
    if outbound is None:
        hint = "add an outbound section: relayed messages go through the outbox"
        return [Problem("needs-outbound", path, "a relay needs outbound", hint)]
    if isinstance(relay, str) and relay not in KINDS:
        hint = f"name one of the message kinds ({', '.join(KINDS)}) or give a request"
        return [Problem("unknown-template", path, f"{relay!r} is no message kind", hint)]
    if isinstance(relay, str) and relay not in outbound:
        hint = f"add outbound.{relay}, or give the relay's request here"
        return [Problem("unknown-template", path, f"outbound has no {relay} template", hint)]
    if isinstance(relay, dict) and relay.get("steps"):
        hint = "relay to one request; a template with steps can be named by its kind"
        return [Problem("invalid-value", path + ["steps"], "a relay takes no steps", hint)]
    merged = {**(outbound.get("defaults") or {}), **relay} if isinstance(relay, dict) else {}
    if isinstance(relay, dict) and "url" not in merged:
        hint = "give the relay a url, or outbound.defaults one"
        return [Problem("missing-url", path, "the relay has no url", hint)]
    return []


# What a setup request's expressions read: {url, channel} (``generic-connector setup``).
SETUP_DATA = ("url", "channel")
_SETUP_HINT = (
    "setup requests are rendered over {url, channel} (the public webhook URL given to "
    "`generic-connector setup`, the channel's name) and env(); there is no webhook request"
)


def setup_requests(section: Optional[List[Dict[str, Any]]]) -> Tuple[RequestTemplate, ...]:
    """The ``setup`` section's requests, in order (from a validated section)."""
    templates = []
    for index, spec in enumerate(section or []):
        template = RequestTemplate("setup", **spec)
        template.where = f"setup[{index}]"  # what render errors name
        templates.append(template)
    return tuple(templates)


def _setup_problems(document: Dict[str, Any]) -> List[Problem]:
    """Setup requests that read what they never have (an event, the webhook's request: they
    are sent from the command line over {url, channel}), whose URL's host is not fixed, with
    a name given twice or a header name HTTP does not allow."""
    from generic_connector.outbound import HEADER_NAME

    problems: List[Problem] = []
    names: List[str] = []
    allow_hosts = "allow_hosts" in (document.get("outbound") or {})
    for index, spec in enumerate(document.get("setup") or []):
        at: List[Any] = ["setup", index]
        if spec["name"] in names:
            message = f"setup request {spec['name']!r} is declared twice"
            problems.append(Problem("duplicate-step", at + ["name"], message, "give each its own"))
        names.append(spec["name"])
        sources = [(at + ["url"], spec["url"]), (at + ["body"], spec.get("body"))]
        for header, value in (spec.get("headers") or {}).items():
            sources.append((at + ["headers", header], value))
            if not HEADER_NAME.match(str(header)):
                message, hint = "not a valid header name", _HEADER_NAME_HINT
                problems.append(Problem("invalid-header-name", sources[-1][0], message, hint))
        for path, source in sources:
            found = _setup_expression_problems(path, source)
            problems += found
            if path[-1] == "url" and not found and not allow_hosts and _reads_request(source):
                message = "the URL's host is built from {url, channel}, not the platform's API"
                hint = "write the API's URL as a literal or an env() base, or use allow_hosts"
                problems.append(Problem("url-from-request", path, message, hint))
    return problems


def _setup_expression_problems(path: List[Any], source: Any) -> List[Problem]:
    if not isinstance(source, str):
        return []
    tree: Tree = compile_expression(source).parsed
    called = {n["value"] for n in nodes(tree) if n["type"] == "function_expression"}
    calls = sorted(called & REQUEST_FUNCTIONS)
    problems = []
    for call in calls:
        message = f"{call}() reads the webhook's request, which a setup request has none of"
        problems.append(Problem("expression-invalid", path, message, _SETUP_HINT))
    for name in dict.fromkeys(_root_fields(tree)):
        if name not in SETUP_DATA:
            message = (
                f"`{source}` reads {name!r}, which setup's data ({{url, channel}}) does not "
                "have: it is always null"
            )
            problems.append(Problem("expression-invalid", path, message, _SETUP_HINT))
    return problems


# Nodes whose right-hand children apply to what the left one gives, not to the data itself.
_LEFT_APPLIED = _APPLIED + ("value_projection", "pipe")


def _root_fields(node: Tree) -> Iterator[str]:
    """The names an expression reads from the data it is evaluated over (``event`` of
    ``event.id``, not ``id``); what an ``&expression`` reads is left out."""
    kind = node["type"]
    if kind == "field":
        yield node["value"]
    elif kind in _LEFT_APPLIED:
        yield from _root_fields(node["children"][0])
    elif kind != "expref":
        for child in node.get("children", ()):
            if isinstance(child, dict):
                yield from _root_fields(child)


def _fetch_problems(section: Optional[List[Any]]) -> List[Problem]:
    """Fetch URLs whose host comes from request data with no allow-list; repeated names."""
    problems: List[Problem] = []
    names: List[str] = []
    for index, spec in enumerate(section or []):
        where = ["request", "fetch", index]
        if spec["name"] in names:
            message = f"fetch {spec['name']!r} is declared twice"
            problems.append(Problem("duplicate-fetch", where + ["name"], message, ""))
        names.append(spec["name"])
        problems += _allow_hosts_problems(where + ["allow_hosts"], spec.get("allow_hosts"))
        if "allow_hosts" not in spec and _reads_request(spec["url"]):
            hint = "list the hosts it may call in allow_hosts"
            message = "the URL's host is built from request data"
            problems.append(Problem("url-from-request", where + ["url"], message, hint))
    return problems


def _token_problems(document: Dict[str, Any]) -> List[Problem]:
    """token() calls that name no declared token (or no literal name), or sit where no sender
    fills them: in a body (outbound or fetch)."""
    declared = set(document.get("tokens") or {})
    outbound = document.get("outbound") or {}
    found: List[Tuple[List[Any], Any, bool]] = []  # (path, expression, filled there)
    for name, template in outbound.items():
        if not isinstance(template, dict):
            continue
        steps = enumerate(template.get("steps") or [])
        requests = [(["outbound", name], template)]
        requests += [(["outbound", name, "steps", index], step) for index, step in steps]
        for path, request in requests:
            found.append((path + ["url"], request.get("url"), True))
            found.append((path + ["body"], request.get("body"), False))
            for header, value in (request.get("headers") or {}).items():
                found.append((path + ["headers", header], value, True))
    for index, spec in enumerate(document.get("setup") or []):
        found.append((["setup", index, "url"], spec.get("url"), True))
        found.append((["setup", index, "body"], spec.get("body"), False))
        for header, value in (spec.get("headers") or {}).items():
            found.append((["setup", index, "headers", header], value, True))
    for index, spec in enumerate(document.get("request", {}).get("fetch") or []):
        found.append((["request", "fetch", index, "url"], spec.get("url"), True))
        found.append((["request", "fetch", index, "body"], spec.get("body"), False))
        for header, value in (spec.get("headers") or {}).items():
            found.append((["request", "fetch", index, "headers", header], value, True))
    problems: List[Problem] = []
    for path, expression, filled in found:
        for call in _token_calls(expression):
            problem = _token_problem(path, call, declared, filled)
            problems += [problem] if problem is not None else []
    return problems


def _token_calls(expression: Any) -> List[Tree]:
    if not isinstance(expression, str):
        return []
    tree = compile_expression(expression).parsed
    return [n for n in nodes(tree) if n["type"] == "function_expression" and n["value"] == "token"]


def _token_problem(
    path: List[Any], call: Tree, declared: Iterable[str], filled: bool
) -> Optional[Problem]:
    argument = call["children"][0] if call["children"] else None
    literal = argument is not None and argument["type"] == "literal"
    name = argument["value"] if literal and argument is not None else None
    hint = f"declared tokens: {', '.join(sorted(declared))}" if declared else "add a tokens section"
    if not isinstance(name, str):
        return Problem("unknown-token", path, "token() takes a literal name: token('api')", hint)
    if name not in declared:
        return Problem("unknown-token", path, f"no token {name!r} in tokens", hint)
    if not filled:
        message = f"token({name!r}) is not filled in a body, only in URLs and headers"
        return Problem("invalid-value", path, message, "use it in the url or a header")
    return None


def _reads_request(expression: str) -> bool:
    """Whether the host of the URL ``expression`` gives may come from request data.

    The host is fixed when the URL is a literal or an operator's value (env(), env_or()), or a
    join() whose fixed leading parts end the authority before any request data: a literal
    ``https://host/`` or an env() value followed by a literal path (``/bot``), as in
    ``join('', [env_or('API', 'https://api.telegram.org'), '/bot', env('T'), '/send'])`` or
    ``join('', ['https://graph.facebook.com/v18.0/', recipient, '/messages'])``.
    """

    def reads(node: Tree) -> bool:
        return any(
            n["type"] in _DATA_NODES
            or (n["type"] == "function_expression" and n["value"] in REQUEST_FUNCTIONS)
            for n in nodes(node)
        )

    def parts(node: Tree) -> List[Any]:
        """The URL's parts in order: literal text, None for an operator's value, False for
        request data."""
        if not reads(node):
            literal = node["type"] == "literal" and isinstance(node["value"], str)
            return [node["value"] if literal else None]
        if node["type"] == "function_expression" and node["value"] == "join":
            separator, items = node["children"]
            if not reads(separator) and items["type"] == "multi_select_list":
                found: List[Any] = []
                for index, item in enumerate(items["children"]):
                    found += (parts(separator) if index else []) + parts(item)
                return found
        return [False]

    def host_fixed(node: Tree) -> bool:
        if node["type"] == "or_expression":  # either side may be the URL
            return all(host_fixed(child) for child in node["children"])
        if node["type"] == "and_expression":  # the left side only when falsy: no URL
            return host_fixed(node["children"][1])
        fixed = ""
        for part in parts(node):
            if part is False:
                return False
            if part is None:  # an operator's value; leading, it is the base URL
                part = "\0" if fixed else "base://host"
            fixed += part
            scheme = fixed.find("://")
            if scheme >= 0 and any(c in fixed[scheme + 3 :] for c in _AUTHORITY_END):
                return True
        return True

    return not host_fixed(compile_expression(expression).parsed)


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
        response=build_response(document.get("response")),
        defer=Deferral(**document["defer"]) if "defer" in document else None,
        handshakes=handshakes,
        outbound=Outbound.from_config(document["outbound"]) if "outbound" in document else None,
        auth=build_auth(document["auth"]) if "auth" in document else None,
        auth_section=document.get("auth"),
        limits=Limits(**document.get("limits", {})),
        idempotency=Idempotency(**document.get("idempotency", {})),
        store=Store(**document.get("store", {})),
        message_routes=_message_routes(document.get("routes", [])),
        tokens=build_specs(document.get("tokens")),
        handover=Handover.from_config(document["handover"], document.get("outbound"))
        if "handover" in document
        else None,
        setup=setup_requests(document.get("setup")),
    )


def _message_routes(specs: List[Dict[str, Any]]) -> Tuple[Route, ...]:
    routes = [DEFAULT_ROUTE]
    routes += [(spec["method"], spec["path"]) for spec in specs]
    return tuple(dict.fromkeys(routes))


def rebuild_auth(config: ChannelConfig) -> ChannelConfig:
    """The config with its auth scheme built again, reading the secrets as they are now."""
    if config.auth is None or config.auth_section is None:
        return config
    return dataclasses.replace(config, auth=build_auth(config.auth_section))


def load_channel(entry: Any, label: str = "") -> ChannelConfig:
    """Validate and compile a channel; raise ConfigError listing every finding."""
    config, findings, _ = check_channel(entry, label, require_env=True)
    if config is None:
        raise ConfigError(findings)
    return config


# Ready mappings: the files of mappings/, shipped inside the package as generic_connector/mappings/.
READY_SUFFIXES = (".yml", ".yaml")


def ready_mappings_dir() -> Optional[Path]:
    """Where the ready mappings are: ``generic_connector/mappings/`` in an installed package,
    ``mappings/`` beside the package in a source checkout (an editable install, an sdist)."""
    package = Path(__file__).resolve().parent
    if (package / "mappings").is_dir():
        return package / "mappings"
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "mappings").is_dir():
        return checkout / "mappings"
    return None


def ready_mappings() -> Dict[str, Path]:
    """The ready mappings by name (``telegram``: its file), in name order."""
    folder = ready_mappings_dir()
    if folder is None:
        return {}
    files = [p for p in folder.iterdir() if p.suffix in READY_SUFFIXES and p.is_file()]
    return {path.stem: path for path in sorted(files, key=lambda path: path.stem)}


def ready_name(reference: str) -> Optional[str]:
    """The ready mapping a ``mapping:`` value can name: a bare name such as ``telegram`` (or
    ``telegram.yml``), never a path."""
    if not reference or "/" in reference or "\\" in reference or reference.startswith("."):
        return None
    for suffix in READY_SUFFIXES:
        if reference.endswith(suffix):
            return reference[: -len(suffix)]
    return reference


def resolve_mapping(reference: str, base_dir: Path) -> Optional[Path]:
    """The file a ``mapping:`` value names: that file when it exists (relative paths start from
    ``base_dir``), else the ready mapping of that name, else None."""
    path = Path(reference)
    if not path.is_absolute():
        path = Path(os.path.relpath(base_dir / path))
    if path.is_file():
        return path
    name = ready_name(reference)
    return None if name is None else ready_mappings().get(name)


def _mapping_not_found(reference: str) -> Tuple[str, str]:
    """(message, hint) for a ``mapping:`` value that names no file and no ready mapping."""
    ready = ready_mappings()
    name = ready_name(reference)
    listing = "`generic-connector mappings` lists the ready ones"
    if name is not None:
        close = difflib.get_close_matches(name, list(ready), n=1)
        hint = f"did you mean '{close[0]}'? {listing}" if close else listing
        return f"no mapping file {reference!r} here and no ready mapping {name!r}", hint
    hint = "relative paths start from the directory rasa run is started in"
    stem = Path(reference).stem
    if stem in ready:
        hint += f"; the ready mapping ships inside the package: mapping: {stem}"
    return f"mapping file {reference!r} not found", hint
