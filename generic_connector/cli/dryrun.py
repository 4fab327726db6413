"""A channel's request handling without Rasa: the dry run and the mapping test cases.

Runs the channel's own pipeline with sample bot replies standing in for the assistant and
outbound requests recorded instead of sent, so a mapping can be checked on a desk in
milliseconds.
"""

import asyncio
import dataclasses
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from generic_connector import routes
from generic_connector.answers import Rendered
from generic_connector.config import ChannelConfig, rebuild_auth
from generic_connector.errors import GenericConnectorError, HTTPError, RenderError
from generic_connector.expressions import EvaluationError, Expression, json_type
from generic_connector.fetch import SampleFetcher
from generic_connector.functions import Scope
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.outbound import (
    Chain,
    Outbound,
    OutboundRequest,
    RequestTemplate,
    a_message,
)
from generic_connector.outbox import Outbox
from generic_connector.pipeline import Assistant, Pipeline, make_store
from generic_connector.request import IncomingRequest, is_json, media_type_of

MESSAGE_FIELDS = ("sender", "text", "input_channel", "metadata", "message_id")

# One bot message of each kind Rasa sends: the answers of every test case's request are
# rendered with them too (``answer_problems``).
SAMPLE_REPLIES: List[Dict[str, Any]] = [
    {"text": "Hello"},
    {"text": "Pick one", "buttons": [{"title": "Yes", "payload": "/affirm"}]},
    {"image": "https://example.com/picture.png"},
    {"custom": {"kind": "card", "title": "A card"}},
]


class SampleAssistant(Assistant):
    """Answers every user message with the same sample replies."""

    def __init__(self, replies: Optional[List[Dict[str, Any]]] = None) -> None:
        self.replies = replies or []

    async def handle(self, message: Extracted) -> Replies:
        return [{"recipient_id": message.sender_id, **reply} for reply in self.replies]


class Recorder(Outbox):
    """Stands in for delivery: keeps the API requests instead of sending them."""

    def __init__(self) -> None:
        self.requests: List[OutboundRequest] = []

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> Awaitable[Any]:
        self.requests.extend(requests)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


class ShownOutbound(Outbound):
    """The ``outbound`` section in a dry run: each request is rendered as ``rasa run`` renders
    it, from the environment's values, which decide whether it is sent (the URL checks,
    ``allow_hosts``); and once more from ``environ``, the variables by name, to be shown. What
    is not sent, and why, is kept in ``problems``, said without the variables' values."""

    def __init__(self, outbound: Outbound, environ: Mapping[str, str]) -> None:
        hosts = outbound.allow_hosts
        super().__init__(
            outbound.templates, outbound.wait, outbound.timeout, outbound.retries,
            outbound.backoff, outbound.max_backoff, hosts.entries if hosts else None,
            outbound.turn,
        )  # fmt: skip
        self.environ = environ
        self.shown: Dict[int, Dict[str, Any]] = {}  # by the id() of the request sent
        self.problems: List[str] = []
        self.renders, self.numbered = outbound.renders, outbound.numbered

    def render_replies(
        self,
        replies: List[Dict[str, Any]],
        recipient: str,
        source: Optional[Extracted],
        scope: Optional[Scope] = None,
        reply_to: Optional[Dict[str, Any]] = None,
    ) -> Tuple[List[OutboundRequest], List[str]]:
        requests, problems = super().render_replies(replies, recipient, source, scope, reply_to)
        self.problems += problems
        return requests, problems

    def render_template(
        self, template: RequestTemplate, context: Dict[str, Any], scope: Optional[Scope]
    ) -> OutboundRequest:
        return self._rendered(template, context, scope)

    def next_request(
        self, chain: Chain, answer: Any, scope: Optional[Scope] = None
    ) -> OutboundRequest:
        template = self.template_of(chain.kind)
        assert template is not None
        answers = {**chain.answers, chain.name: answer}
        return self._rendered(template, chain.context, scope, chain.next, answers)

    def _rendered(
        self,
        template: RequestTemplate,
        context: Dict[str, Any],
        scope: Optional[Scope],
        position: int = 0,
        answers: Optional[Dict[str, Any]] = None,
    ) -> OutboundRequest:
        by_name = Scope(environ=self.environ)
        if scope is not None:
            by_name = Scope(scope.request, scope.body, self.environ, scope.clock, scope.random)
        shown: Union[OutboundRequest, Exception]
        try:
            shown = template.render_chain(context, by_name, position, answers, check_url=False)
        except (RenderError, EvaluationError) as error:
            shown = error
        try:
            sent = template.render_chain(context, scope, position, answers)
        except EvaluationError as error:  # its reason may quote a variable's value
            if isinstance(shown, EvaluationError) and shown.expression == error.expression:
                raise shown from None
            reason = "with the variables' values, which a dry run does not show"
            raise EvaluationError(error.expression, reason) from None
        self.shown[id(sent)] = _shown(self, sent, shown)
        return sent


def simulate(
    config: ChannelConfig,
    request: IncomingRequest,
    replies: Optional[List[Dict[str, Any]]] = None,
    now: Optional[float] = None,
    fetched: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """What the channel would hand to Rasa and answer for ``request``.

    ``replies`` are the bot messages Rasa is assumed to produce for each user message
    (without ``recipient_id``); ``now`` is the time signatures are checked at; ``fetched``
    the sample answers of ``request.fetch`` by name. The request
    goes through the channel's own pipeline, with outbound requests recorded, not sent, and
    environment variables in them shown by name (``ShownOutbound``); ``outbound_problems``
    says why replies were not sent, ``problem`` why the answer could not be rendered after
    Rasa handled the messages, and ``reason`` what the server would log about a refusal.
    """
    recorder, fetcher = Recorder(), SampleFetcher(fetched)
    outbound = ShownOutbound(config.outbound, _masked(config)) if config.outbound else None
    channel = dataclasses.replace(config, outbound=outbound)
    pipeline = Pipeline(channel, make_store(config), recorder, fetcher=fetcher)
    exchange, answer = asyncio.run(pipeline.run(request, SampleAssistant(replies), now))
    if exchange.refusal is not None:
        result = {"status": answer.status, "error": json.loads(answer.body), "messages": []}
        reason = _reason(exchange.refusal, fetcher)
        if reason:  # what the server would log, e.g. why a signature failed
            result["reason"] = reason
        return result
    if exchange.handshake is not None:
        return {"status": answer.status, "handshake": True, **_answer(answer)}
    result = {
        "status": answer.status,
        "messages": [_message(m) for m in exchange.messages],
        "ignored": [rule for _, rule in exchange.ignored],
        **_answer(answer),
    }
    if outbound is not None:
        requests = _with_steps(outbound, recorder.requests, fetched or {})
        result["outbound"] = [outbound.shown[id(r)] for r in requests]
        if outbound.problems:
            result["outbound_problems"] = outbound.problems
    if exchange.problem is not None:
        result["problem"] = exchange.problem
    return result


def _with_steps(
    outbound: "ShownOutbound", requests: List[OutboundRequest], samples: Mapping[str, Any]
) -> List[OutboundRequest]:
    """The recorded requests, each chain's steps followed by the requests after them, rendered
    from the sample answers given by step name (``fetched``; null when there is none)."""
    found = []
    for request in requests:
        found.append(request)
        while request.then is not None:
            name = request.then.name
            try:
                request = outbound.next_request(request.then, samples.get(name))
            except (RenderError, EvaluationError) as error:
                problem = f"{a_message(request.kind)}, the request after step {name!r}: {error}"
                outbound.problems.append(problem)
                break
            found.append(request)
    return found


def _reason(refusal: HTTPError, fetcher: SampleFetcher) -> Optional[str]:
    """What the server would log about a refusal: its reason; a fetch without a sample answer;
    or for a failure of its own (5xx) the error it was raised for (the answer template's)."""
    if refusal.reason:
        return refusal.reason
    missing = [r.name for r in fetcher.requests if r.name not in fetcher.answers]
    if missing:
        return (
            f"fetch {missing[0]!r}: no sample answer "
            "(give it with --fetched, or in a test case's fetched)"
        )
    if refusal.status >= 500 and refusal.__context__ is not None:
        return str(refusal.__context__)
    return None


def _masked(config: ChannelConfig) -> Dict[str, str]:
    """The environment as a dry run shows it: each variable the channel reads (with env(),
    env_or(), as an auth secret) that is set, by name. An empty one stays empty: env_or()
    gives its default for it, as in ``rasa run``."""
    names = set(config.env_names())
    names.update(name for e in config.expressions() for name in e.optional_env_names)
    values = {name: os.environ[name] for name in names if name in os.environ}
    return {name: f"${{{name}}}" if value else "" for name, value in values.items()}


def _shown(
    outbound: Outbound, sent: OutboundRequest, shown: Union[OutboundRequest, Exception]
) -> Dict[str, Any]:
    """A request as a dry run shows it: ``shown``, rendered with the variables by name, and
    allowed or not as ``sent`` (with their values) is."""
    result: Dict[str, Any] = {"kind": sent.kind, "method": sent.method}
    if isinstance(shown, Exception):
        result["not_shown"] = f"with the variables by name, {shown}"
    else:
        sent_json = is_json(media_type_of(shown.headers.get("Content-Type", "")))
        body = json.loads(shown.body) if shown.body and sent_json else None
        result["url"] = shown.url
        result["headers"] = dict(shown.headers)
        result["body"] = body if body is not None else (shown.body or b"").decode()
    result["allowed"] = outbound.allows(sent)
    return result


def _message(extracted: Extracted) -> Dict[str, Any]:
    return {
        "sender": extracted.sender_id,
        "text": extracted.text,
        "input_channel": extracted.input_channel,
        "metadata": extracted.metadata,
        "message_id": extracted.message_id,
    }


def _answer(rendered: Rendered) -> Dict[str, Any]:
    text = rendered.body.decode("utf-8")
    as_json = is_json(media_type_of(rendered.content_type))
    return {
        "response": {
            "content_type": rendered.content_type,
            "headers": dict(rendered.headers),
            "body": json.loads(text) if as_json and text else text,
        }
    }


class CaseError(GenericConnectorError, ValueError):
    """A test case that cannot be run, e.g. because its body file is missing."""


def case_request(
    case: Dict[str, Any], base_dir: Path, config: Optional[ChannelConfig] = None
) -> IncomingRequest:
    """The request a test case describes; ``body_file`` is relative to ``base_dir``. Its
    ``path`` is matched against the channel's routes (``config``), as the channel's server
    does: ``/transactions/t1`` is ``/transactions/{txn_id}`` with ``path('txn_id')`` ``t1``."""
    if "body_file" in case:
        try:
            raw = (base_dir / case["body_file"]).read_bytes()
        except OSError:
            raise CaseError(f"body file {case['body_file']!r} not found") from None
    elif isinstance(case.get("body"), str):
        raw = case["body"].encode("utf-8")
    elif "body" in case:
        raw = json.dumps(case["body"]).encode("utf-8")
    else:
        raw = b""
    headers = dict(case.get("headers", {}))
    if raw and "body" in case and not isinstance(case["body"], str):
        headers.setdefault("Content-Type", "application/json")
    method, path = case.get("method", "POST").upper(), case.get("path", "/webhook")
    matched = routes.match(config.routes(), method, path) if config is not None else None
    template, parameters = matched if matched is not None else (path, {})

    def request() -> IncomingRequest:
        return IncomingRequest.from_parts(
            raw, headers, case.get("query"), method, template, path_params=parameters
        )

    signed = case.get("sign") or {}
    if signed:  # headers computed over the request as sent: an object body's JSON included
        unsigned, at = request(), case.get("time")
        scope = Scope(unsigned, clock=(lambda: float(at)) if at is not None else time.time)
        for name, source in signed.items():
            try:
                value = Expression(source).search({}, scope)  # [a, b] over null is null
            except EvaluationError as error:
                raise CaseError(f"sign.{name}: {error}") from None
            if not isinstance(value, str):
                raise CaseError(f"sign.{name} gave {json_type(value)}, not a string")
            headers[name] = value
    return request()


@contextmanager
def environment(variables: Dict[str, str], cleared: Iterable[str] = ()) -> Iterator[None]:
    """The variables a test case sets, while its dry run runs; ``cleared`` are unset for as
    long (the playground's runs see only the page's variables)."""
    saved = {name: os.environ.get(name) for name in {*variables, *cleared}}
    for name in cleared:
        os.environ.pop(name, None)
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_case(config: ChannelConfig, case: Dict[str, Any], base_dir: Path) -> List[str]:
    """Run one test case; return what differs from its expectations (empty when it passes)."""
    with environment(case.get("env", {})):
        config = rebuild_auth(config)  # it reads its secrets when built: in this environment
        request = case_request(case, base_dir, config)
        result = simulate(
            config, request, case.get("replies"), case.get("time"), case.get("fetched")
        )
    expect = case["expect"]
    messages = result.get("messages", [])
    failures = []
    if "status" in expect and expect["status"] != result["status"]:
        failures.append(_differs("status", expect["status"], result["status"]) + _why(result))
    if "error" in expect:
        actual = result.get("error", {}).get("error", "")
        if expect["error"] not in actual:
            failures.append(
                f"error: expected a message containing {expect['error']!r}, got {actual!r}"
            )
    expected_messages = expect.get("messages", [])
    single = {key: expect[key] for key in MESSAGE_FIELDS if key in expect}
    if single:
        expected_messages = [single]
    if expected_messages and "error" in result:
        failures.append("expected messages for Rasa, but the request was refused" + _why(result))
    elif "messages" in expect and len(expect["messages"]) != len(messages):
        failures.append(f"messages: expected {len(expect['messages'])}, got {len(messages)}")
    else:
        for index, wanted in enumerate(expected_messages):
            got = messages[index] if index < len(messages) else {}
            for key, value in wanted.items():
                if got.get(key) != value:
                    label = key if single else f"messages[{index}].{key}"
                    failures.append(_differs(label, value, got.get(key)))
    if "ignored" in expect and expect["ignored"] != result.get("ignored", []):
        failures.append(_differs("ignored", expect["ignored"], result.get("ignored", [])))
    if "outbound" in expect:
        failures += _outbound_failures(expect["outbound"], result)
    if "response" in expect:
        if "response" not in result:
            failures.append("expected a response, but the request was refused" + _why(result))
        elif result["response"]["body"] != expect["response"]:
            got = result["response"]["body"]
            failures.append(_differs("response", expect["response"], got) + _why(result))
    if "headers" in expect:
        failures += _header_failures(expect["headers"], result)
    return failures


def _header_failures(expected: Dict[str, Any], result: Dict[str, Any]) -> List[str]:
    """How the answer's headers (Content-Type among them) differ from a test case's
    ``headers``, compared by name in any case; a null one must be absent."""
    if "response" not in result:
        return ["expected an answer's headers, but the request was refused" + _why(result)]
    answer = result["response"]
    sent = {"content-type": answer["content_type"]}
    sent.update((name.lower(), value) for name, value in answer["headers"].items())
    return [
        _differs(f"headers.{name}", value, sent.get(name.lower())) + _why(result)
        for name, value in expected.items()
        if sent.get(name.lower()) != value
    ]


def _outbound_failures(expected: List[Dict[str, Any]], result: Dict[str, Any]) -> List[str]:
    """How the requests made differ from a test case's ``outbound``: when there are not as
    many, the requests made (with the variables by name) and why others were not sent."""
    made = result.get("outbound", [])
    if len(made) != len(expected):
        count = f"{len(expected)} request" + ("" if len(expected) == 1 else "s")
        shown = [{key: r.get(key) for key in ("method", "url", "body")} for r in made]
        problems = result.get("outbound_problems")
        return [
            f"outbound: expected {count}, got {len(made)}"
            + (f": {json.dumps(shown)}" if shown else "")
            + (f" (problems: {json.dumps(problems)})" if problems else "")
            + _why(result)
        ]
    return [
        _differs(f"outbound[{index}].{key}", value, got.get(key))
        for index, (wanted, got) in enumerate(zip(expected, made))
        for key, value in wanted.items()
        if got.get(key) != value
    ]


def answer_problem(config: ChannelConfig, case: Dict[str, Any], base_dir: Path) -> Optional[str]:
    """Why the answer to a test case's request cannot be rendered when the bot sends one
    message of each kind (``SAMPLE_REPLIES``), or None. Rasa would have handled the message."""
    with environment(case.get("env", {})):
        config = rebuild_auth(config)
        request = case_request(case, base_dir, config)
        result = simulate(config, request, SAMPLE_REPLIES, case.get("time"), case.get("fetched"))
    return result.get("problem")


def _why(result: Dict[str, Any]) -> str:
    """Why the channel answered as it did: its error, the reason it would log, and what failed
    after the messages were handled (the answer template)."""
    error = result.get("error")
    why = [f"{result['status']}: {error['error']}"] if error else []
    why += [result[key] for key in ("reason", "problem") if result.get(key)]
    return f" ({'; '.join(why)})" if why else ""


def _differs(key: str, expected: Any, actual: Any) -> str:
    return f"{key}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
