"""Starter mappings guessed from captured requests or payload files (``generic-connector new``).

The request body is walked for what a chat platform's webhook usually carries: the user's
text (``text``, ``message``, ``body``, ``content``; preferably inside a message), who sent it
(``from``, ``sender``, ``user``, ``author``, ``chat``, ``conversation`` with an id, or such a
key holding the id itself), the delivery's id (``update_id``, ``webhookEventId``,
``event_id``, ``message_id``, ``id``...) and, for batched webhooks, a list of objects holding
these, which becomes ``request.events``. The guesses go into a mapping file whose test cases
are the captured requests, expecting what the guessed mapping makes of them: worked out with
the dry run, and the whole file checked by the same validation as ``generic-connector
validate`` before it is handed out.
"""

import json
import os
import re
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs

import yaml

from generic_connector.cli import editor
from generic_connector.cli.dryrun import case_request, environment, simulate
from generic_connector.cli.validate import validate_file
from generic_connector.config import SCHEMA, SCHEMA_PATH, check_channel
from generic_connector.errors import GenericConnectorError
from generic_connector.request import FORM, media_type_of

TEXT_KEYS = ("text", "message", "body", "content")
# A text inside one of these is the message's own text (message.text, text.body).
MESSAGE_PARENTS = ("message", "msg", "text", "post")
# Objects standing for the conversation or the sender (with an id inside), in order of
# preference: the conversation first, as Rasa keeps one tracker per sender id.
SENDER_OBJECTS = ("chat", "conversation", "from", "sender", "user", "author", "source")
SENDER_IDS = (
    "id", "user_id", "userid", "uid", "chat_id", "chatid", "sender_id", "senderid", "phone",
    "phone_number", "wa_id", "number",
)  # fmt: skip
# Keys holding the id itself: {"sender": "u1"}, Twilio's From, WhatsApp's from.
SENDER_VALUES = SENDER_OBJECTS + (
    "sender_id", "senderid", "user_id", "userid", "from_id", "fromid", "author_id", "chat_id",
    "chatid", "conversation_id", "conversationid",
)  # fmt: skip
# The delivery's id first (what a platform repeats when it retries), then the message's.
MESSAGE_IDS = (
    "update_id", "webhookeventid", "event_id", "eventid", "messagesid", "message_id",
    "messageid", "mid", "msg_id", "client_msg_id", "post_id", "smsmessagesid", "smssid", "id",
)  # fmt: skip
# A bare `id` is the message's only directly on the event or inside one of these.
ID_PARENTS = MESSAGE_PARENTS + ("update", "event")
CASE_KEYS = tuple(SCHEMA["definitions"]["test_case"]["properties"])
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HANDSHAKE_PATH = re.compile(r"^/[A-Za-z0-9/_.-]*$")
MAX_NODES = 200_000
MAX_DEPTH = 64
OTHER_CANDIDATES = 5
VERIFY_TOKEN = "VERIFY_TOKEN"
# The keys of a test case, in the order the starter mapping writes them.
CASE_ORDER = (
    "name", "source", "method", "path", "headers", "query", "body", "body_file", "env", "time",
    "replies", "expect",
)  # fmt: skip

Step = Union[str, int]


class StarterError(GenericConnectorError):
    """Input that cannot be read (exit status 2)."""


class NothingToGuess(GenericConnectorError):
    """Input without a text or a sender to map (exit status 1)."""


# --- reading the inputs ---------------------------------------------------------------


@dataclass
class Source:
    """One input file: the test case it gives and the decoded body to guess from."""

    path: Path
    case: Dict[str, Any]
    payload: Any = None  # the body as the mapping would see it, when it is JSON or a form
    form: bool = False
    body_path: Optional[Path] = None  # an absolute body_file


def _header(case: Dict[str, Any], name: str) -> str:
    for key, value in case.get("headers", {}).items():
        if key.lower() == name.lower():
            return str(value)
    return ""


def _form(text: str) -> Optional[Dict[str, Any]]:
    if "=" not in text:
        return None
    try:
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


def _decoded(raw: bytes, content_type: str) -> Tuple[Any, bool]:
    """(payload, is a form) of a raw body; (None, False) when it is neither JSON nor a form.

    A form content type is tried as a form first: ``curl -d`` and urllib send JSON with it.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, False
    as_form = media_type_of(content_type) == FORM
    form = _form(text.strip()) if as_form else None
    if form:
        return form, True
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, (dict, list)):
        return value, False
    form = None if as_form else _form(text.strip())
    return (form, True) if form else (None, False)


def is_case(document: Any) -> bool:
    """Whether a JSON document is a test case (as ``capture`` writes them), not a payload."""
    return (
        isinstance(document, dict)
        and "expect" in document
        and "name" in document
        and all(key in CASE_KEYS for key in document)
    )


def load_source(path: Path) -> Source:
    """A captured test case, a JSON payload, or a form body, read from ``path``."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise StarterError(f"cannot read {path}: {error.strerror}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        document = None
    if is_case(document):
        case = {key: value for key, value in document.items() if key != "expect"}
        source = Source(path, case)
        if "body_file" in case:
            source.body_path = (path.parent / str(case["body_file"])).resolve()
            try:
                body = source.body_path.read_bytes()
            except OSError:
                raise StarterError(
                    f"{path}: body file {case['body_file']!r} not found next to it"
                ) from None
        elif isinstance(case.get("body"), str):
            body = case["body"].encode("utf-8")
        elif "body" in case:
            source.payload = case["body"]
            return source
        else:
            return source
        source.payload, source.form = _decoded(body, _header(case, "Content-Type"))
        return source
    name = f"the payload of {path.name}"
    if isinstance(document, (dict, list)):
        return Source(path, {"name": name, "body": document}, document)
    form = _decoded(raw, FORM)[0]
    if form is None:
        raise StarterError(
            f"{path} holds neither a captured request, nor a JSON object or list, nor a form body"
        )
    case = {"name": name, "headers": {"Content-Type": FORM}, "body": raw.decode("utf-8").strip()}
    return Source(path, case, form, form=True)


# --- walking the JSON -----------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    steps: Tuple[Step, ...]
    value: Any


def walk(value: Any, steps: Tuple[Step, ...] = ()) -> Iterator[Node]:
    """Every value under ``value`` with its path, in document order (bounded)."""
    count = 0

    def visit(node: Any, at: Tuple[Step, ...]) -> Iterator[Node]:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            return
        yield Node(at, node)
        if len(at) - len(steps) >= MAX_DEPTH:
            return
        if isinstance(node, dict):
            for key, child in node.items():
                yield from visit(child, at + (key,))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                yield from visit(child, at + (index,))

    yield from visit(value, steps)


def expression(steps: Sequence[Step], project: bool = False) -> str:
    """A JMESPath path: keys quoted where they are not identifiers, lists indexed or
    projected (``[]``)."""
    text = ""
    for step in steps:
        if isinstance(step, int):
            text += "[]" if project else f"[{step}]"
        else:
            key = step if _IDENTIFIER.match(step) else json.dumps(step, ensure_ascii=False)
            text += f".{key}" if text else key
    return text or "@"


def _last_key(steps: Sequence[Step], skip: int = 0) -> str:
    keys = [s for s in steps if isinstance(s, str)]
    return keys[-1 - skip].lower() if len(keys) > skip else ""


def _lists(steps: Sequence[Step]) -> int:
    return sum(isinstance(s, int) for s in steps)


def _is_id(value: Any) -> bool:
    return (isinstance(value, str) and value != "") or (
        isinstance(value, int) and not isinstance(value, bool)
    )


def text_rank(node: Node) -> Optional[Tuple[int, ...]]:
    if not node.steps or not isinstance(node.steps[-1], str) or not isinstance(node.value, str):
        return None
    key = node.steps[-1].lower()
    if key not in TEXT_KEYS:
        return None
    parent = _last_key(node.steps, 1)
    return (node.value == "", parent not in MESSAGE_PARENTS, TEXT_KEYS.index(key))


def sender_rank(node: Node) -> Optional[Tuple[int, ...]]:
    if not node.steps or not isinstance(node.steps[-1], str) or not _is_id(node.value):
        return None
    key = node.steps[-1].lower()
    above = node.steps[-2] if len(node.steps) > 1 else None
    parent = above.lower() if isinstance(above, str) else ""
    ranks = []
    if parent in SENDER_OBJECTS and key in SENDER_IDS:
        ranks.append((SENDER_VALUES.index(parent), SENDER_IDS.index(key)))
    if key in SENDER_VALUES:
        ranks.append((SENDER_VALUES.index(key), 0))
    return min(ranks) if ranks else None


def message_id_rank(node: Node, event_depth: int) -> Optional[Tuple[int, ...]]:
    if not node.steps or not isinstance(node.steps[-1], str) or not _is_id(node.value):
        return None
    key = node.steps[-1].lower()
    if key not in MESSAGE_IDS:
        return None
    if key == "id" and len(node.steps) - event_depth > 1:
        parent = node.steps[-2]
        if not isinstance(parent, str) or parent.lower() not in ID_PARENTS:
            return None
    return (MESSAGE_IDS.index(key),)


@dataclass(frozen=True)
class Candidate:
    expression: str
    value: Any
    rank: Tuple[Any, ...]


def _ranked(nodes: List[Node], scope: Tuple[Step, ...], rank: Any) -> List[Candidate]:
    found: Dict[str, Candidate] = {}
    for order, node in enumerate(nodes):
        score = rank(node)
        if score is None:
            continue
        relative = node.steps[len(scope) :]
        path = expression(relative)
        candidate = Candidate(path, node.value, (_lists(relative), *score, len(relative), order))
        if path not in found or candidate.rank < found[path].rank:
            found[path] = candidate
    return sorted(found.values(), key=lambda c: c.rank)


def _at(value: Any, steps: Sequence[Step]) -> Any:
    for step in steps:
        value = value[step]
    return value


@dataclass
class Guess:
    """The guessed request section: best candidates first."""

    events: Optional[str]
    text: List[Candidate]
    sender: List[Candidate]
    message_id: List[Candidate]
    form: bool = False
    event_count: int = 1


def guess(payload: Any, form: bool = False) -> Guess:
    """The likely events, text, sender and message id of a decoded request body."""
    nodes = list(walk(payload))
    best: Optional[Tuple[Tuple[Any, ...], Tuple[Step, ...]]] = None  # (rank, event prefix)
    for order, node in enumerate(nodes):
        score = text_rank(node)
        if score is None:
            continue
        prefix: Tuple[Step, ...] = ()
        kind = 0  # not in a list
        if _lists(node.steps):
            last = max(i for i, s in enumerate(node.steps) if isinstance(s, int))
            item_steps = node.steps[: last + 1]
            item = _at(payload, item_steps)
            in_event = isinstance(item, dict) and (
                isinstance(payload, list)
                or any(sender_rank(n) and not _lists(n.steps) for n in walk(item))
            )
            kind = 1 if in_event else 2  # an item of a list of events, or some other list
            prefix = item_steps if in_event else ()
        rank = (kind, *score, len(node.steps), order)
        if best is None or rank < best[0]:
            best = (rank, prefix)
    if best is None:
        raise NothingToGuess(
            "found no text: no key named "
            + ", ".join(TEXT_KEYS)
            + " holds a string; write request.text by hand"
        )
    scope = best[1]
    event = _at(payload, scope)
    in_scope = [Node(scope + n.steps, n.value) for n in walk(event)]
    texts = _ranked(in_scope, scope, text_rank)
    senders = _ranked(in_scope, scope, sender_rank)
    ids = _ranked(in_scope, scope, lambda n: message_id_rank(n, len(scope)))
    if not senders:
        where = " in the event" if scope else ""
        raise NothingToGuess(
            f"found the text ({texts[0].expression}) but no sender{where}: no key named "
            + ", ".join(SENDER_VALUES[:7])
            + " holds an id or an object with one; write request.sender by hand"
        )
    events = None
    count = 1
    if scope:
        events = expression(scope, project=True)
        count = len(list(_select(payload, scope)))
    return Guess(events, texts, senders, ids, form, count)


def _select(payload: Any, scope: Tuple[Step, ...]) -> Iterator[Any]:
    """The items the projection of ``scope`` selects (to count the events)."""
    if not scope:
        yield payload
        return
    step, rest = scope[0], scope[1:]
    if isinstance(step, int):
        if isinstance(payload, list):
            for item in payload:
                yield from _select(item, rest)
    elif isinstance(payload, dict) and step in payload:
        yield from _select(payload[step], rest)


# --- handshakes -----------------------------------------------------------------------


def _quoted(text: str) -> str:
    """A JMESPath raw string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def handshake_for(source: Source) -> Optional[Dict[str, Any]]:
    """A handshake answering the verification challenge ``source`` holds, if it holds one.

    A verify token in the query is checked against the variable VERIFY_TOKEN, which the
    source's test case then sets to the captured token.
    """
    case = source.case
    if case.get("method", "POST") == "GET":
        query = case.get("query", {})
        challenge = next((k for k in query if k.lower().endswith("challenge")), None)
        if challenge is None:
            return None
        handshake: Dict[str, Any] = {"name": "webhook verification", "method": "GET"}
        path = case.get("path", "/webhook")
        if path != "/webhook" and _HANDSHAKE_PATH.match(path):
            handshake["path"] = path
        mode = next((k for k in query if k.lower().endswith("mode")), None)
        if mode is not None:
            handshake["when"] = f"query({_quoted(mode)}) == {_quoted(query[mode])}"
        token = next((k for k in query if "token" in k.lower()), None)
        if token is not None:
            handshake["verify"] = f"query({_quoted(token)}) == env('{VERIFY_TOKEN}')"
            case["env"] = {**case.get("env", {}), VERIFY_TOKEN: str(query[token])}
        handshake["response"] = {
            "body": f"query({_quoted(challenge)})",
            "content_type": "text/plain",
        }
        return handshake
    payload = source.payload
    if (
        isinstance(payload, dict)
        and payload.get("type") == "url_verification"
        and isinstance(payload.get("challenge"), str)
    ):
        return {
            "name": "url_verification",
            "when": "type == 'url_verification'",
            "response": {"body": "request.challenge", "content_type": "text/plain"},
        }
    return None


# --- the mapping ----------------------------------------------------------------------


@dataclass
class Starter:
    """A starter mapping: its document, its text, and what was left out."""

    name: str
    guess: Guess
    document: Dict[str, Any]
    text: str = ""
    skipped: List[str] = field(default_factory=list)
    tests_passed: int = 0


def channel_name(name: Optional[str], path: Path) -> str:
    """``--name``, else the file's stem made a valid channel name."""
    if name is not None:
        if not _NAME.match(name):
            raise StarterError(
                f"--name {name!r}: use letters, digits, '-' and '_' (it becomes /webhooks/<name>/)"
            )
        return name
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).lstrip("-_")
    return stem or "starter"


def _expect(result: Dict[str, Any], fields: List[str]) -> Dict[str, Any]:
    """What a test case must expect for the dry run's ``result``."""
    if "error" in result:
        return {"status": result["status"], "error": result["error"]["error"]}
    if result.get("handshake"):
        return {"status": result["status"], "response": result["response"]["body"]}
    messages = [{key: message[key] for key in fields} for message in result["messages"]]
    if len(messages) == 1 and not result["ignored"]:
        return messages[0]
    expect: Dict[str, Any] = {"status": result["status"], "messages": messages}
    if result["ignored"]:
        expect["ignored"] = result["ignored"]
    return expect


def _case_for(source: Source, body_base: Optional[Path]) -> Dict[str, Any]:
    """The source's test case as the mapping holds it: POST cases on the message route,
    ``body_file`` relative to the mapping file (absolute when it goes to stdout)."""
    case = dict(source.case)
    if case.get("method", "POST") == "POST":
        case.pop("path", None)
    for key in ("headers", "query"):
        if key in case and not case[key]:
            del case[key]
    if source.body_path is not None:
        if body_base is None:
            case["body_file"] = str(source.body_path)
        else:
            case["body_file"] = os.path.relpath(source.body_path, body_base)
    return {key: case[key] for key in CASE_ORDER if key in case}


def build(sources: List[Source], name: str, out: Optional[Path] = None) -> Starter:
    """The starter mapping for ``sources``, its test cases' expectations from the dry run.

    ``out`` is where it will be written (for the schema and body file paths); None for stdout.
    """
    skipped = []
    usable = []
    handshakes: List[Dict[str, Any]] = []
    for source in sources:
        method = source.case.get("method", "POST")
        handshake = handshake_for(source) if method in ("GET", "POST") else None
        if handshake is not None:
            route = (handshake.get("method"), handshake.get("path"))
            if all((h.get("method"), h.get("path")) != route for h in handshakes):
                handshakes.append(handshake)
            if handshake.get("path"):
                source.case["path"] = handshake["path"]
            elif method == "GET":
                source.case.pop("path", None)
            usable.append(source)
        elif method == "POST":
            usable.append(source)
        else:
            why = (
                "a GET request without a verification challenge"
                if method == "GET"
                else f"a {method} request: channels serve POST (and GET handshakes)"
            )
            skipped.append(f"{source.path}: left out, {why}")
    primary = next(
        (
            s
            for s in usable
            if isinstance(s.payload, (dict, list)) and any(text_rank(n) for n in walk(s.payload))
        ),
        None,
    )
    if primary is None:
        with_body = next((s for s in usable if s.payload is not None), None)
        if with_body is not None:
            guess(with_body.payload, with_body.form)  # raises, saying what is missing
        raise NothingToGuess(
            "none of the requests has a JSON or form body with a text to map"
            + ("; " + "; ".join(skipped) if skipped else "")
        )
    guessed = guess(primary.payload, primary.form)
    request: Dict[str, Any] = {}
    if guessed.form:
        request["format"] = "form"
    if guessed.events:
        request["events"] = guessed.events
    text = guessed.text[0].expression
    request["ignore"] = [{"name": "no text", "when": f"!({text})"}]
    request["sender"] = guessed.sender[0].expression
    request["text"] = text
    if guessed.message_id:
        request["message_id"] = guessed.message_id[0].expression
    document: Dict[str, Any] = {"name": name}
    if handshakes:
        document["handshakes"] = handshakes
    document["request"] = request
    config, findings, _ = check_channel(json.loads(json.dumps(document)), name)
    if config is None:  # the guesses are built to compile: a bug if not
        raise AssertionError("\n".join(map(str, findings)))
    body_base = out.resolve().parent if out is not None else None
    fields = ["sender", "text"] + (["message_id"] if guessed.message_id else [])
    tests = []
    for source in usable:
        case = _case_for(source, body_base)
        run = dict(case)
        if source.body_path is not None:  # the output's folder may not exist yet
            run["body_file"] = str(source.body_path)
        with environment(case.get("env", {})):
            result = simulate(config, case_request(run, Path.cwd()))
        case["expect"] = _expect(result, fields)
        tests.append(case)
    document["tests"] = tests
    starter = Starter(name, guessed, document, skipped=skipped)
    starter.text = render(starter, sources, out)
    return starter


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 20)
    return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.rstrip("\n")


def _others(candidates: List[Candidate]) -> List[str]:
    rest = [c.expression for c in candidates[1 : 1 + OTHER_CANDIDATES]]
    return [f"  # other candidates: {', '.join(rest)}"] if rest else []


def _block(value: Dict[str, Any], indent: str) -> List[str]:
    text = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)
    return [indent + line if line else line for line in text.splitlines()]


def schema_reference(out: Optional[Path]) -> str:
    """The schema for the editor comment. Written to a file: the project's own copy
    (``.vscode/generic-connector.schema.json`` of the project, the folder above ``mappings/``
    or the file's folder; written when missing, as ``schema --project`` does), relative to the
    file, so that the line does not name a path inside a virtualenv. Printed: the installed
    package's schema."""
    if out is None:
        return str(SCHEMA_PATH)
    folder = out.resolve().parent
    project = folder.parent if folder.name == "mappings" else folder
    schema = project / editor.FOLDER / editor.MAPPING_SCHEMA
    if not schema.exists():
        schema.parent.mkdir(parents=True, exist_ok=True)
        schema.write_text(json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return Path(os.path.relpath(schema, folder)).as_posix()


def render(starter: Starter, sources: List[Source], out: Optional[Path]) -> str:
    """The mapping file's text, with comments on what was guessed and what else was found."""
    document, guessed = starter.document, starter.guess
    names = ", ".join(s.path.name for s in sources)
    about = (
        f"A starter mapping guessed from {names}. Check each expression against the "
        "platform's documentation, then add auth, metadata and a response "
        "(see docs/configuration.md)."
    )
    lines = [f"# yaml-language-server: $schema={schema_reference(out)}"]
    lines += ["# " + line for line in textwrap.wrap(about, 92, break_on_hyphens=False)]
    lines.append(f"name: {_scalar(starter.name)}")
    if "handshakes" in document:
        lines.append("handshakes:")
        for handshake in document["handshakes"]:
            block = _block({"handshakes": [handshake]}, "  ")[1:]
            if "verify" in handshake:
                lines.append(f"  # {VERIFY_TOKEN}: the verify token given to the platform")
            lines += block
    request = document["request"]
    lines.append("request:")
    if "format" in request:
        lines.append(f"  format: {request['format']}")
    if "events" in request:
        many = f"{guessed.event_count} in the sample"
        lines.append(f"  # each item of this list becomes one user message ({many})")
        lines.append(f"  events: {_scalar(request['events'])}")
    lines.append("  # events without text (receipts, edits, joins) are acknowledged, not mapped")
    lines += _block({"ignore": request["ignore"]}, "  ")
    for key, candidates in (
        ("sender", guessed.sender),
        ("text", guessed.text),
        ("message_id", guessed.message_id),
    ):
        if key in request:
            lines += _others(candidates)
            lines.append(f"  {key}: {_scalar(request[key])}")
    if "message_id" not in request:
        lines.append("  # message_id: no id found; Rasa makes one up for each message")
    lines.append("")
    lines += _block({"tests": document["tests"]}, "")
    return "\n".join(lines) + "\n"


def write_checked(starter: Starter, out: Optional[Path]) -> List[str]:
    """Write the mapping to ``out`` (or a scratch file) and validate it as
    ``generic-connector validate`` does; return the findings (empty when valid)."""
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(starter.text, encoding="utf-8")
        except OSError as error:
            raise StarterError(f"cannot write {out}: {error.strerror}") from None
        report = validate_file(out)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / f"{starter.name}.yml"
            path.write_text(starter.text, encoding="utf-8")
            report = validate_file(path)
    starter.tests_passed = report.tests_passed
    return [str(finding) for finding in report.findings]
