"""``generic-connector playground``: a mapping, a request and what the channel makes of it, on
one local web page.

The page (``generic_connector/playground/``: one HTML, one JavaScript and one CSS file, no
build step, nothing from another host) edits a mapping file and a request and shows, as
either changes, the located findings of ``validate`` and the result of the dry run:
each stage's outcome, the messages for Rasa, the answer and the outbound requests. Every
answer comes from the code the commands use: ``validate_file`` for findings and test cases,
``case_request`` and ``simulate`` for the request, so the page shows what ``validate``,
``dry-run`` and ``rasa run`` would. Nothing leaves the machine: outbound requests are
recorded, fetches answered from samples, key servers not called; the server listens on
127.0.0.1 unless told otherwise, and writes the file only when asked to.

The API (JSON over POST, a JSON answer; ``Playground`` holds one method per endpoint):

    GET  /                the page; GET /static/playground.js, /static/playground.css
    GET  /api/schema      the mapping schema, for completion
    GET  /api/cases       the file's test cases (and a ready mapping's) as requests
    POST /api/check       {mapping_text} -> findings, warnings, test cases passed and failed
    POST /api/run         {mapping_text, request, env, replies, fetched, time} -> the result
    POST /api/request     {mapping_text, case} -> a captured request (``capture``) as a request
    POST /api/case        {mapping_text, name, ...the run's keys} -> the text with a test case
    POST /api/save        {mapping_text} -> writes the file
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Set, Tuple

import yaml

from generic_connector.auth import AuthUnavailable
from generic_connector.auth._keys import KeySet
from generic_connector.cli.capture import is_secret_name
from generic_connector.cli.dryrun import (
    MESSAGE_FIELDS,
    SAMPLE_REPLIES,
    CaseError,
    case_request,
    environment,
    simulate,
)
from generic_connector.cli.validate import validate_file
from generic_connector.config import (
    SCHEMA,
    ChannelConfig,
    check_channel,
    load_yaml,
    ready_mappings,
    rebuild_auth,
)
from generic_connector.errors import ConfigError, Finding, GenericConnectorError

ASSETS = Path(__file__).resolve().parent.parent / "playground"
STATIC = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
DEFAULT_PORT = 5080
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_REQUEST = 2 * 1024 * 1024  # bytes of one API request: a mapping, a body, samples
# What the page is allowed to load: its own files, nothing from another host.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class PlaygroundError(GenericConnectorError, ValueError):
    """An API request that cannot be served: answered 400 with its message."""


class Playground:
    """The endpoints of one mapping file. ``path`` is where the text is saved (a ready
    mapping opened by name is saved as a new file in the current directory, never into
    the package); ``ready`` names the ready mapping whose test cases are offered too."""

    def __init__(self, path: Path, text: str, ready: Optional[str] = None) -> None:
        self.path = path
        self.text = text
        self.ready = ready
        # Runs change the process's environment while they last: one at a time.
        self.lock = threading.Lock()

    @classmethod
    def open(cls, reference: Optional[str]) -> "Playground":
        """The file ``reference`` names, else the ready mapping of that name (saved to
        ``./<name>.yml``); without one, the ready mapping ``myio`` (saved to ./myio.yml)."""
        ready = ready_mappings()
        if reference is not None and Path(reference).is_file():
            path = Path(reference)
            text = path.read_text(encoding="utf-8")
            return cls(path, text, _ready_name(path, text, ready))
        name = reference or "myio"
        name = name[: -len(".yml")] if name.endswith(".yml") else name
        if name not in ready:
            raise PlaygroundError(f"no file {reference!r} and no ready mapping of that name")
        text = ready[name].read_text(encoding="utf-8")
        return cls(Path(f"{name}.yml"), text, name)

    # --- the endpoints ---------------------------------------------------------------------

    def schema(self) -> Dict[str, Any]:
        return SCHEMA

    def cases(self) -> Dict[str, Any]:
        """The file's test cases, and the ready mapping's, as the page's requests."""
        found: List[Dict[str, Any]] = []
        with self.lock, self._scratch(self.text) as scratch:
            document, config = _loaded(scratch)
            for index, case in enumerate(_tests(document)):
                found.append(self._as_request(case, config, f"tests[{index}]"))
            if self.ready is not None and ready_mappings()[self.ready] != self.path.resolve():
                ready_path = ready_mappings()[self.ready]
                ready_doc, _ = _loaded(ready_path)
                names = {case.get("name") for case in _tests(document)}
                for index, case in enumerate(_tests(ready_doc)):
                    if case.get("name") not in names:  # a copy's cases are the file's
                        label = f"{self.ready}: tests[{index}]"
                        found.append(self._as_request(case, config, label))
        return {
            "file": str(self.path),
            "text": self.text,
            "cases": found,
            "sample_replies": SAMPLE_REPLIES,
        }

    def check(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        """``validate``'s findings (errors and warnings, located) and the test cases run."""
        text = _text(payload)
        with self.lock, self._scratch(text) as scratch, _no_key_servers():
            report = validate_file(scratch, check_env=False)
            label = scratch.stem
            document, config = _loaded(scratch)
        shown = [self._finding(f, label) for f in report.findings]
        env: List[str] = []
        if config is not None:
            env = sorted(set(config.env_names()) | _optional_env(config))
        return {
            "valid": report.valid,
            "findings": [f for f in shown if f["severity"] == "error"],
            "warnings": [f for f in shown if f["severity"] == "warning"],
            "tests": {"passed": report.tests_passed, "failed": report.tests_failed},
            "env": env,
            "secrets": [n for n in env if _is_secret(n, config)],
        }

    def run(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        """The dry run of the page's request: ``simulate``'s result, each stage's outcome."""
        text = _text(payload)
        with self.lock, self._scratch(text) as scratch:
            document, config = _loaded(scratch)
            if config is None:
                return {"invalid": True, "stages": []}
            return self._run(config, payload, scratch.parent)

    def request(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        """A test case (a file ``capture`` wrote) as the page's request."""
        case = payload.get("case")
        if not isinstance(case, dict):
            raise PlaygroundError("case must be an object: a test case, as capture writes it")
        with self.lock, self._scratch(_text(payload)) as scratch:
            _, config = _loaded(scratch)
            return self._as_request(case, config, str(case.get("name", "captured")))

    def add_case(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        """The mapping text with the page's request and what the channel made of it appended
        to ``tests:`` as a test case (the text is not saved)."""
        text = _text(payload)
        name = str(payload.get("name") or "").strip() or "a request from the playground"
        with self.lock, self._scratch(text) as scratch:
            _, config = _loaded(scratch)
            if config is None:
                raise PlaygroundError("the mapping is not valid: fix its findings first")
            result = self._run(config, payload, scratch.parent)
        case = case_from(name, payload, result)
        return {"mapping_text": append_case(text, case), "case": case}

    def save(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        text = _text(payload)
        self.path.write_text(text, encoding="utf-8")
        self.text = text
        return {"saved": str(self.path)}

    # --- helpers ---------------------------------------------------------------------------

    def _run(self, config: ChannelConfig, payload: Dict[str, Any], base: Path) -> Dict[str, Any]:
        env = _strings(payload.get("env"), "env")
        replies = _list_of_objects(payload.get("replies"), "replies")
        fetched = payload.get("fetched") or None
        if fetched is not None and not isinstance(fetched, dict):
            raise PlaygroundError("fetched must be an object: sample answers by fetch name")
        at = payload.get("time")
        now = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
        names = set(config.env_names()) | _optional_env(config) | set(env)
        auth: Dict[str, Any] = {}
        with _only(env, names), _no_key_servers():
            config = _watched(rebuild_auth(config), auth)
            try:
                incoming = case_request(_as_case(payload.get("request")), base, config)
            except CaseError as error:
                raise PlaygroundError(str(error)) from None
            result = simulate(config, incoming, replies, now, fetched)
        secrets = {name: value for name, value in env.items() if _is_secret(name, config)}
        result = _masked(result, secrets)
        result["stages"] = stages(config, result, auth)
        return result

    def _as_request(
        self, case: Dict[str, Any], config: Optional[ChannelConfig], label: str
    ) -> Dict[str, Any]:
        """A test case as the page's request: the body as it is sent (an object as its JSON),
        the headers a case's ``sign`` computes filled in."""
        name = str(case.get("name", label))
        shown: Dict[str, Any] = {"label": f"{label}: {name}", "name": name}
        for key in ("env", "time", "replies", "fetched"):
            if key in case:
                shown[key] = case[key]
        headers = {str(k): str(v) for k, v in dict(case.get("headers") or {}).items()}
        try:
            with environment({k: str(v) for k, v in dict(case.get("env") or {}).items()}):
                incoming = case_request(case, self.path.parent, config)
        except CaseError as error:
            shown["error"] = str(error)
            return shown
        typed = any(h.lower() == "content-type" for h in headers)
        if (
            case.get("body") not in (None, "")
            and not isinstance(case.get("body"), str)
            and not typed
        ):
            headers["Content-Type"] = "application/json"  # as case_request sends it
        for header in dict(case.get("sign") or {}):
            headers[header] = incoming.header(header) or ""
        shown["request"] = {
            "method": str(case.get("method", "POST")).upper(),
            "path": str(case.get("path", "/webhook")),
            "headers": headers,
            "query": {str(k): str(v) for k, v in dict(case.get("query") or {}).items()},
            "body": incoming.body.decode("utf-8", errors="replace"),
        }
        return shown

    def _finding(self, finding: Finding, label: str) -> Dict[str, Any]:
        """A finding about the scratch copy, said of the file."""
        path = finding.path
        if label != self.path.stem and (path == label or path.startswith(label + ".")):
            path = self.path.stem + path[len(label) :]
        shown = Finding(
            finding.code, path, finding.message, finding.hint, str(self.path),
            finding.line, finding.column, severity=finding.severity,
        )  # fmt: skip
        return {**shown.as_dict(), "severity": finding.severity, "text": str(shown)}

    @contextlib.contextmanager
    def _scratch(self, text: str) -> Iterator[Path]:
        """The text in a file beside the original (relative ``body_file`` paths work there),
        or in a temporary folder when that folder cannot be written to; removed afterwards."""
        folder = self.path.resolve().parent
        scratch = folder / f".{self.path.stem}.playground-{os.getpid()}.yml"
        temporary: Optional[tempfile.TemporaryDirectory] = None
        try:
            scratch.write_text(text, encoding="utf-8")
        except OSError:
            temporary = tempfile.TemporaryDirectory(prefix="playground-")
            scratch = Path(temporary.name) / self.path.name
            scratch.write_text(text, encoding="utf-8")
        try:
            yield scratch
        finally:
            scratch.unlink(missing_ok=True)
            if temporary is not None:
                temporary.cleanup()


# --- the page's request, and the result -----------------------------------------------------


def stages(config: ChannelConfig, result: Dict[str, Any], auth: Dict[str, Any]) -> List[Dict]:
    """Each stage's outcome, read from the dry run's result (and what ``auth`` recorded)."""
    refused = "error" in result
    status = result.get("status")
    found: List[Dict[str, Any]] = []
    if config.auth is None:
        found.append({"stage": "auth", "outcome": "none", "detail": "no auth section"})
    elif auth:
        found.append({"stage": "auth", **auth})
    elif refused:
        detail = "the request was refused before the signature was checked"
        found.append({"stage": "auth", "outcome": "not reached", "detail": detail})
    else:
        detail = "not checked: a handshake's GET request"
        found.append({"stage": "auth", "outcome": "skipped", "detail": detail})
    if result.get("handshake"):
        found.append({"stage": "handshake", "outcome": "answered", "detail": f"{status}"})
        return found
    if refused:
        reason = result.get("reason")
        message = result["error"].get("error", "") if isinstance(result["error"], dict) else ""
        detail = f"{status}: {message}" + (f" ({reason})" if reason else "")
        found.append({"stage": "answer", "outcome": "refused", "detail": detail})
        return found
    found.append({"stage": "handshake", "outcome": "none", "detail": "no handshake matched"})
    messages, ignored = result.get("messages", []), result.get("ignored", [])
    detail = f"{len(messages)} message(s) for Rasa, {len(ignored)} ignored"
    found.append({"stage": "events", "outcome": "mapped", "detail": detail})
    found.append({"stage": "answer", "outcome": "answered", "detail": f"{status}"})
    if config.outbound is not None:
        made, problems = result.get("outbound", []), result.get("outbound_problems", [])
        detail = f"{len(made)} request(s) recorded, {len(problems)} not sent"
        found.append({"stage": "outbound", "outcome": "recorded", "detail": detail})
    return found


def case_from(name: str, payload: Dict[str, Any], result: Dict[str, Any]) -> Dict[str, Any]:
    """A mapping test case of the page's request, expecting what the channel made of it."""
    request = _as_case(payload.get("request"))
    case: Dict[str, Any] = {"name": name}
    body, headers = request["body"], request["headers"]
    typed = any(h.lower() == "content-type" for h in headers)
    case["body"] = body
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        if typed and isinstance(parsed, (dict, list)) and json.dumps(parsed) == body:
            case["body"] = parsed  # sent as the same bytes: its JSON
    if not body:
        del case["body"]
    if headers:
        case["headers"] = headers
    if request["query"]:
        case["query"] = request["query"]
    if request["method"] != "POST":
        case["method"] = request["method"]
    if request["path"] != "/webhook":
        case["path"] = request["path"]
    for key in ("env", "replies", "fetched"):
        if payload.get(key):
            case[key] = payload[key]
    if isinstance(payload.get("time"), (int, float)):
        case["time"] = payload["time"]
    case["expect"] = expectations(result)
    return case


def expectations(result: Dict[str, Any]) -> Dict[str, Any]:
    """A test case's ``expect`` for a dry run's result: what ``run_case`` compares."""
    expect: Dict[str, Any] = {"status": result["status"]}
    if "error" in result:
        error = result["error"]
        if isinstance(error, dict) and error.get("error"):
            expect["error"] = error["error"]
        return expect
    messages = [
        {k: v for k, v in message.items() if k in MESSAGE_FIELDS and v is not None}
        for message in result.get("messages", [])
    ]
    if len(messages) == 1:
        expect.update(messages[0])
    elif messages:
        expect["messages"] = messages
    if result.get("ignored"):
        expect["ignored"] = result["ignored"]
    if "response" in result and not result.get("problem"):
        expect["response"] = result["response"]["body"]
    if result.get("outbound"):
        keys = ("method", "url", "body")
        expect["outbound"] = [{k: r[k] for k in keys if k in r} for r in result["outbound"]]
    return expect


def append_case(text: str, case: Dict[str, Any]) -> str:
    """``text`` with ``case`` appended to its ``tests:`` list, everything else (comments
    included) as it was: the case is inserted after the list's last item, indented as its
    items are; a file without ``tests:`` gets one at its end."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise PlaygroundError(f"the mapping is not valid YAML: {error}") from None
    tests = None
    if isinstance(root, yaml.MappingNode):
        tests = next((v for k, v in root.value if k.value == "tests"), None)
    if not isinstance(tests, yaml.SequenceNode) or tests.flow_style or not tests.value:
        if tests is not None and not (isinstance(tests, yaml.SequenceNode) and not tests.value):
            raise PlaygroundError("tests: must be a list written in block style to append to")
        item = _dumped(case, 0)
        if tests is None:
            return text + ("" if text.endswith("\n") or not text else "\n") + "tests:\n" + item
        start, end = tests.start_mark.index, tests.end_mark.index  # tests: [] or tests:
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end
        return text[:start].rstrip(" ") + "\n" + item + text[line_end + 1 :]
    first = tests.value[0]
    indent = max(first.start_mark.column - 2, 0)
    end = _last_mark(tests.value[-1])
    line_end = text.find("\n", end)
    if line_end < 0:
        return text + "\n" + _dumped(case, indent)
    return text[: line_end + 1] + _dumped(case, indent) + text[line_end + 1 :]


def _last_mark(node: yaml.Node) -> int:
    """Where the last value of ``node`` ends in the text (block mappings end only where
    the next key starts, after the comments between them)."""
    while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.value:
        if node.flow_style:
            break
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    index: int = node.end_mark.index
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        index -= 1  # a block scalar ends at the start of the line after it
    return index


def _dumped(case: Dict[str, Any], indent: int) -> str:
    plain = json.loads(json.dumps([case]))  # plain dicts and lists, as YAML writes them
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=100)
    return "".join(" " * indent + line if line.strip() else line for line in text.splitlines(True))


# --- small pieces ---------------------------------------------------------------------------


def _text(payload: Dict[str, Any]) -> str:
    text = payload.get("mapping_text")
    if not isinstance(text, str):
        raise PlaygroundError("mapping_text must be the mapping file's text")
    return text


def _strings(value: Any, key: str) -> Dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise PlaygroundError(f"{key} must be an object of names and values")
    return {str(k).strip(): str(v) for k, v in value.items() if str(k).strip()}


def _list_of_objects(value: Any, key: str) -> List[Dict[str, Any]]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PlaygroundError(f"{key} must be a list of bot messages (objects)")
    return value


def _as_case(request: Any) -> Dict[str, Any]:
    """The page's request as the keys of a test case (the body as the text it is sent as)."""
    if not isinstance(request, dict):
        raise PlaygroundError("request must be an object: method, path, headers, query, body")
    body = request.get("body") or ""
    if not isinstance(body, str):
        raise PlaygroundError("request.body must be the body's text")
    return {
        "method": str(request.get("method") or "POST").upper(),
        "path": str(request.get("path") or "/webhook"),
        "headers": _strings(request.get("headers"), "request.headers"),
        "query": _strings(request.get("query"), "request.query"),
        "body": body,
    }


def _loaded(path: Path) -> Tuple[Any, Optional[ChannelConfig]]:
    """The document of a mapping file and its channel (None when the file is not valid)."""
    try:
        document = load_yaml(path)
    except ConfigError:
        return None, None
    if not isinstance(document, dict):
        return document, None
    config, _, _ = check_channel(document, path.stem)
    return document, config


def _tests(document: Any) -> List[Dict[str, Any]]:
    tests = document.get("tests") if isinstance(document, dict) else None
    return [t for t in tests if isinstance(t, dict)] if isinstance(tests, list) else []


def _ready_name(path: Path, text: str, ready: Dict[str, Path]) -> Optional[str]:
    """The ready mapping a file is a copy or a variant of: by its ``name``, else its stem."""
    with contextlib.suppress(yaml.YAMLError):
        document = yaml.safe_load(text)
        if isinstance(document, dict) and document.get("name") in ready:
            return str(document["name"])
    return path.stem if path.stem in ready else None


def _optional_env(config: ChannelConfig) -> Set[str]:
    return {name for e in config.expressions() for name in e.optional_env_names}


def _is_secret(name: str, config: Optional[ChannelConfig]) -> bool:
    auth = config.auth.env_names() if config is not None and config.auth is not None else []
    return name in auth or is_secret_name(name)


def _watched(config: ChannelConfig, seen: Dict[str, Any]) -> ChannelConfig:
    """``config`` whose auth scheme notes in ``seen`` whether it let the request through,
    and why not; the check itself is the scheme's own."""
    auth = config.auth
    if auth is None:
        return config
    check = auth.check

    async def watched(request: Any, body: Any, now: Optional[float] = None) -> None:
        try:
            await check(request, body, now)
        except AuthUnavailable as error:
            seen.update(outcome="unavailable", detail=str(error))
            raise
        except Exception as error:
            seen.update(outcome="refused", detail=str(error))
            raise
        seen.update(outcome="passed", detail="the request is authentic")

    auth.check = watched  # type: ignore[method-assign]  # this run's own: rebuild_auth made it
    return config


def _only(variables: Dict[str, str], names: Set[str]) -> ContextManager[None]:
    """The session's variables, and none of the channel's others, while a run lasts: the
    page shows what its own variables give, not what the server's environment holds."""
    return environment(variables, cleared=names)


@contextlib.contextmanager
def _no_key_servers() -> Iterator[None]:
    """Key servers (JWKS, OpenID, X.509 URLs) are not called: the scheme is told they are
    unavailable, as it would be when they cannot be reached."""
    original = KeySet._get_json

    async def refused(self: KeySet, url: str) -> Any:
        raise AuthUnavailable(f"the playground does not fetch keys from {url}")

    KeySet._get_json = refused  # type: ignore[method-assign]
    try:
        yield
    finally:
        KeySet._get_json = original  # type: ignore[method-assign]


def _masked(value: Any, variables: Dict[str, str]) -> Any:
    """``value`` with every secret's value written ``${NAME}`` (longest first): outbound
    requests show every variable by name already; this covers what else may quote one."""
    pairs = sorted(
        ((v, f"${{{k}}}") for k, v in variables.items() if len(v) >= 4),
        key=lambda pair: -len(pair[0]),
    )
    if not pairs:
        return value

    def mask(item: Any) -> Any:
        if isinstance(item, str):
            for secret, name in pairs:
                item = item.replace(secret, name)
            return item
        if isinstance(item, list):
            return [mask(v) for v in item]
        if isinstance(item, dict):
            return {mask(k): mask(v) for k, v in item.items()}
        return item

    return mask(value)


# --- the server -----------------------------------------------------------------------------

Endpoint = Callable[[Dict[str, Any]], Dict[str, Any]]


def endpoints(playground: Playground) -> Dict[Tuple[str, str], Endpoint]:
    return {
        ("GET", "/api/schema"): lambda _: playground.schema(),
        ("GET", "/api/cases"): lambda _: playground.cases(),
        ("POST", "/api/check"): playground.check,
        ("POST", "/api/run"): playground.run,
        ("POST", "/api/request"): playground.request,
        ("POST", "/api/case"): playground.add_case,
        ("POST", "/api/save"): playground.save,
    }


class Handler(BaseHTTPRequestHandler):
    """Serves the page, its two files and the API; refuses requests for another host name
    (a page elsewhere reaching this one through DNS) and POSTs that are not JSON."""

    server: "PlaygroundServer"
    server_version = "generic-connector-playground"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # the page's requests are many and say nothing a user needs

    def _serve(self, method: str) -> None:
        if not self._local_host():
            return self._send(HTTPStatus.FORBIDDEN, {"error": "not a local host name"})
        path = self.path.split("?", 1)[0]
        if method == "GET" and path in ("/", "/index.html"):
            return self._file("playground.html", "text/html; charset=utf-8")
        if method == "GET" and path.startswith("/static/") and path[8:] in STATIC:
            return self._file(path[8:], STATIC[path[8:]])
        endpoint = self.server.endpoints.get((method, path))
        if endpoint is None:
            return self._send(HTTPStatus.NOT_FOUND, {"error": f"no {method} {path}"})
        try:
            payload = self._payload() if method == "POST" else {}
            answer = endpoint(payload)
        except PlaygroundError as error:
            return self._send(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        self._send(HTTPStatus.OK, answer)

    def _local_host(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return self.server.open_to_all or host in LOCAL_HOSTS

    def _payload(self) -> Dict[str, Any]:
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise PlaygroundError("the API takes JSON (Content-Type: application/json)")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST:
            raise PlaygroundError(f"a request of more than {MAX_REQUEST} bytes")
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise PlaygroundError("the request's body is not JSON") from None
        if not isinstance(payload, dict):
            raise PlaygroundError("the request's body must be a JSON object")
        return payload

    def _file(self, name: str, content_type: str) -> None:
        self._write(HTTPStatus.OK, (ASSETS / name).read_bytes(), content_type)

    def _send(self, status: HTTPStatus, answer: Any) -> None:
        body = json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8")
        self._write(status, body, "application/json")

    def _write(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class PlaygroundServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, playground: Playground, host: str = "127.0.0.1", port: int = 0) -> None:
        self.playground = playground
        self.endpoints = endpoints(playground)
        self.open_to_all = host not in LOCAL_HOSTS
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{'[' + name + ']' if ':' in name else name}:{port}/"


def add_command(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``playground``."""
    command = subparsers.add_parser(
        "playground",
        help="a local web page: edit a mapping and a request, see what the channel makes of it",
        description="Serves a page on http://127.0.0.1:PORT/ that shows, as you type, the "
        "mapping's located findings and what the channel makes of a request: each stage, the "
        "messages for Rasa, the answer and the outbound requests (recorded, never sent). The "
        "file is written only when the page's Save button asks for it.",
    )
    command.add_argument(
        "file",
        nargs="?",
        help="a mapping file, or a ready mapping's name (saved to ./<name>.yml); default myio",
    )
    command.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks one"
    )
    command.add_argument(
        "--host",
        default="127.0.0.1",
        help="default 127.0.0.1; any other address lets other machines read and write the file",
    )
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from generic_connector.cli import UsageError

    try:
        playground = Playground.open(args.file)
    except (PlaygroundError, OSError) as error:
        raise UsageError(str(error)) from None
    if args.host not in LOCAL_HOSTS:
        print(
            f"warning: serving on {args.host}: other machines can read and save "
            f"{playground.path} and run requests through it",
            file=sys.stderr,
        )
    try:
        server = PlaygroundServer(playground, args.host, args.port)
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    print(f"playground for {playground.path} on {server.url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
