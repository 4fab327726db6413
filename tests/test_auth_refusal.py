"""``auth.refusal``: the status and body of the answer to a request that fails authentication.

The scheme gives the pipeline ``refusal_status``, ``refusal_headers()`` and
``refusal_answer()``; these tests hold what it gives."""

from typing import Any, Dict, List

import pytest

from generic_connector.auth import AnyOf, AuthConfigError, build_auth
from generic_connector.config import check_channel
from generic_connector.functions import Scope
from generic_connector.request import IncomingRequest

CHALLENGE = {"WWW-Authenticate": 'Basic realm="webhook", charset="UTF-8"'}


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERNAME", "rasa")
    monkeypatch.setenv("PASSWORD", "pw")
    monkeypatch.setenv("TOKEN", "s3cret")


def basic(**refusal: Any) -> Dict[str, Any]:
    section = {"type": "basic", "username_env": "USERNAME", "password_env": "PASSWORD"}
    return dict(section, refusal=refusal) if refusal else section


TOKEN = {"type": "token", "secret_env": "TOKEN", "header": "X-Token"}


def test_without_refusal_the_answer_is_the_default_401() -> None:
    scheme = build_auth(basic())
    assert scheme.refusal_status == 401
    assert scheme.refusal_body is None
    assert scheme.refusal_answer({"a": 1}) is None
    assert scheme.refusal_headers() == CHALLENGE


def test_a_literal_body_and_403() -> None:
    scheme = build_auth(basic(status=403, body='`{"errcode": 40001, "errmsg": "invalid"}`'))
    assert scheme.refusal_status == 403
    assert scheme.refusal_headers() == {}  # the challenge goes with 401 only
    answer = scheme.refusal_answer(None)
    assert answer is not None
    assert (answer.status, answer.content_type, dict(answer.headers)) == (
        403, "application/json", {}
    )  # fmt: skip
    assert answer.body == b'{"errcode":40001,"errmsg":"invalid"}'


def test_a_text_body_keeps_the_challenge_with_401() -> None:
    answer = build_auth(basic(body="'fail'", content_type="text/plain")).refusal_answer(None)
    assert answer is not None
    assert (answer.body, answer.content_type, answer.status) == (b"fail", "text/plain", 401)
    assert dict(answer.headers) == CHALLENGE


def test_a_body_reads_the_request() -> None:
    scheme = build_auth(
        basic(status=403, body="{error: 'denied', id: header('X-Id'), to: request.to}")
    )
    scope = Scope(IncomingRequest.from_parts(b"", {"X-Id": "7"}))
    answer = scheme.refusal_answer({"to": "bot"}, scope)
    assert answer is not None and answer.body == b'{"error":"denied","id":"7","to":"bot"}'
    before_decoding = scheme.refusal_answer(None, scope)
    assert before_decoding is not None
    assert before_decoding.body == b'{"error":"denied","id":"7","to":null}'


def test_a_body_that_fails_leaves_the_default_answer() -> None:
    scheme = build_auth(basic(body="sort(request)"))
    assert scheme.refusal_answer({"a": 1}) is None


def test_a_list_answers_as_its_first_section() -> None:
    scheme = build_auth([dict(TOKEN, refusal={"status": 403, "body": "'no'"}), basic()])
    assert isinstance(scheme, AnyOf)
    assert scheme.refusal_status == 403
    assert scheme.refusal_headers() == {}
    answer = scheme.refusal_answer(None)
    assert answer is not None and (answer.status, answer.body) == (403, b'"no"')
    plain = build_auth([TOKEN, basic()])
    assert plain.refusal_status == 401 and plain.refusal_headers() == CHALLENGE


def findings(auth: Any) -> List[Any]:
    entry = {"name": "r", "request": {"sender": "s", "text": "t"}, "auth": auth}
    config, found, _ = check_channel(entry)
    assert config is None
    return [(finding.code, finding.path) for finding in found]


def test_refusal_on_a_later_section_of_a_list_is_refused() -> None:
    sections = [TOKEN, basic(status=403)]
    with pytest.raises(AuthConfigError, match=r"auth\[1\]\.refusal: only the first section"):
        build_auth(sections)
    assert findings(sections) == [("invalid-value", "r.auth[1].refusal")]


@pytest.mark.parametrize(
    "refusal, finding",
    [
        ({"status": 402}, ("invalid-value", "r.auth.refusal.status")),
        ({"status": 200}, ("invalid-value", "r.auth.refusal.status")),
        ({"body": "'unclosed"}, ("expression-syntax", "r.auth.refusal.body")),
        ({"headers": {}}, ("unknown-key", "r.auth.refusal.headers")),
    ],
)
def test_invalid_refusals_are_findings(refusal: Dict[str, Any], finding: Any) -> None:
    assert findings(dict(TOKEN, refusal=refusal)) == [finding]
    with pytest.raises(AuthConfigError):
        build_auth(dict(TOKEN, refusal=refusal))
