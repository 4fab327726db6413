"""The dry run and the mapping test cases show what the channel would send, and why not."""

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from generic_connector.cli import main

SENDER = """
name: sender
request: {sender: user, text: text}
outbound:
  allow_hosts: [api.example.com]
  text:
    url: "join('', [env('API_URL'), '/send'])"
    headers:
      Authorization: "join(' ', ['Bearer', env('API_TOKEN')])"
      X-Region: "env_or('REGION', 'eu')"
    body: "{to: recipient, text: message.text}"
"""

ENV = ("--env", "API_URL=https://api.example.com", "--env", "API_TOKEN=s3cret")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def dry_run(*args: str) -> Tuple[Dict[str, Any], str]:
    """``generic-connector dry-run ARGS``: its JSON result and the text it printed; the
    variables ``--env`` sets are taken back afterwards, as the command's process would end."""
    output = io.StringIO()
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(output):
        code = main(["dry-run", *args])
    result = json.loads(output.getvalue())
    assert code == (1 if result["status"] >= 400 else 0)  # 1: the channel would refuse or fail
    return result, output.getvalue()


def validate(capsys: pytest.CaptureFixture, path: str) -> Tuple[int, List[str]]:
    with mock.patch.dict(os.environ):
        code = main(["validate", path])
    return code, capsys.readouterr().out.splitlines()


@pytest.fixture()
def body(tmp_path: Path) -> str:
    return write(tmp_path, "body.json", '{"user": "u", "text": "hi"}')


def test_an_outbound_url_read_from_a_variable_is_shown_by_name(tmp_path: Path, body: str) -> None:
    mapping = write(tmp_path, "sender.yml", SENDER)
    result, printed = dry_run(mapping, "--body", body, "--reply", "Hello", *ENV)
    assert result["outbound"] == [
        {
            "kind": "text",
            "method": "POST",
            "url": "${API_URL}/send",
            "headers": {
                "Authorization": "Bearer ${API_TOKEN}",
                "X-Region": "eu",
                "Content-Type": "application/json",
            },
            "body": {"to": "u", "text": "Hello"},
            "allowed": True,  # the URL it is sent to: https://api.example.com/send
        }
    ]
    assert "outbound_problems" not in result
    assert "s3cret" not in printed and "api.example.com" not in printed


def test_a_request_that_is_not_sent_says_why(tmp_path: Path, body: str) -> None:
    mapping = write(tmp_path, "sender.yml", SENDER)
    replies = write(tmp_path, "replies.json", '[{"text": "Hello"}, {"image": "https://x.png"}]')
    result, _ = dry_run(
        mapping, "--body", body, "--replies", replies,
        "--env", "API_URL=ftp://api.example.com", "--env", "API_TOKEN=s3cret",
    )  # fmt: skip
    assert result["outbound"] == []
    assert result["outbound_problems"] == [
        "a text message: outbound.text.url gave no http(s) URL with a host; not sent",
        "image messages: the mapping has no outbound template for them; not sent",
    ]


def test_a_problem_that_quotes_a_variable_names_it(tmp_path: Path, body: str) -> None:
    mapping = write(
        tmp_path, "sender.yml", SENDER.replace("text: message.text}", "n: abs(env('API_TOKEN'))}")
    )
    result, printed = dry_run(mapping, "--body", body, *ENV)
    assert result["outbound"] == []
    [problem] = result["outbound_problems"]
    assert "${API_TOKEN}" in problem and problem.endswith("; not sent")
    assert "s3cret" not in printed


def test_a_request_shown_only_with_the_values_is_still_sent(tmp_path: Path, body: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    signed = "join(' ', ['Bearer', jwt_sign({iss: 'me'}, 'RSA_KEY', 'RS256')])"
    mapping = write(
        tmp_path, "sender.yml", SENDER.replace("\"env_or('REGION', 'eu')\"", f'"{signed}"')
    )
    result, printed = dry_run(mapping, "--body", body, *ENV, "--env", f"RSA_KEY={key.decode()}")
    [request] = result["outbound"]
    assert (request["kind"], request["allowed"]) == ("text", True)
    assert request["not_shown"].startswith("with the variables by name, `join(' ', ['Bearer'")
    assert "outbound_problems" not in result and "PRIVATE KEY" not in printed


def test_env_or_reads_the_variables_the_dry_run_sets(tmp_path: Path, body: str) -> None:
    url = "join('', [env('API_URL'), '/send'])"
    mapping = write(tmp_path, "sender.yml", SENDER.replace(url, "'https://api.example.com/send'"))
    set_, _ = dry_run(mapping, "--body", body, *ENV, "--env", "REGION=us")
    empty, _ = dry_run(mapping, "--body", body, *ENV, "--env", "REGION=")
    assert set_["outbound"][0]["headers"]["X-Region"] == "${REGION}"
    assert empty["outbound"][0]["headers"]["X-Region"] == "eu"  # as env_or() gives in rasa run


def test_a_url_from_env_or_is_shown_by_name_when_set(tmp_path: Path, body: str) -> None:
    mapping = write(
        tmp_path,
        "sender.yml",
        SENDER.replace("env('API_URL')", "env_or('API_URL', 'https://api.example.com')"),
    )
    default, _ = dry_run(mapping, "--body", body, "--env", "API_TOKEN=s3cret")
    given, _ = dry_run(mapping, "--body", body, *ENV)
    assert default["outbound"][0]["url"] == "https://api.example.com/send"
    assert given["outbound"][0]["url"] == "${API_URL}/send"


CASES = """
tests:
  - name: the variables a case sets
    body: {"user": "u", "text": "hi"}
    env: {API_URL: "https://api.example.com", API_TOKEN: s3cret, REGION: us}
    replies: [{text: Hello}]
    expect:
      outbound:
        - url: ${API_URL}/send
          headers: {Authorization: "Bearer ${API_TOKEN}", X-Region: "${REGION}",
                    Content-Type: application/json}
          body: {to: u, text: Hello}
"""


def test_a_test_case_sees_its_variables_by_name(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, "sender.yml", SENDER + CASES)
    code, out = validate(capsys, path)
    assert (code, out[0]) == (
        0,
        f"{path}: ok (sender, 1 test case passed; reads API_TOKEN, API_URL)",
    )


FETCHING = """
name: fetching
request:
  fetch:
    - name: message
      url: join('', ['https://api.example.com/v1/messages/', data.id])
  sender: fetched.message.roomId
  text: fetched.message.text
"""


@pytest.mark.parametrize(
    "name, answers",
    [
        ("fetched.json", '{"message": {"roomId": "r-1", "text": "hi"}}'),
        ("fetched.yml", "message:\n  roomId: r-1\n  text: hi\n"),
    ],
)
def test_dry_run_takes_sample_fetch_answers(tmp_path: Path, name: str, answers: str) -> None:
    mapping = write(tmp_path, "fetching.yml", FETCHING)
    body = write(tmp_path, "body.json", '{"data": {"id": "m-1"}}')
    result, _ = dry_run(mapping, "--body", body, "--fetched", write(tmp_path, name, answers))
    assert result["status"] == 200
    assert [(m["sender"], m["text"]) for m in result["messages"]] == [("r-1", "hi")]


def test_dry_run_without_a_sample_fetch_answer_says_so(tmp_path: Path) -> None:
    mapping = write(tmp_path, "fetching.yml", FETCHING)
    body = write(tmp_path, "body.json", '{"data": {"id": "m-1"}}')
    result, _ = dry_run(mapping, "--body", body)
    assert result["status"] == 503
    assert result["reason"] == (
        "fetch 'message': no sample answer (give it with --fetched, or in a test case's fetched)"
    )


def test_dry_run_refuses_fetched_answers_that_are_not_an_object(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    mapping = write(tmp_path, "fetching.yml", FETCHING)
    body = write(tmp_path, "body.json", '{"data": {"id": "m-1"}}')
    answers = write(tmp_path, "f.json", "[1]")
    with pytest.raises(SystemExit) as exited:
        main(["dry-run", mapping, "--body", body, "--fetched", answers])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"{answers} must hold an object: the sample answers by fetch name\n"
    )


FRAGILE = """
name: fragile
request:
  sender: user
  text: text
  ignore: [{name: greetings, when: "text == 'hello'"}]
response:
  body: "split(request.text, request.sep)"
"""
EMPTY_SEPARATOR = "`split(request.text, request.sep)` failed on this request: empty separator"


def test_dry_run_says_why_the_answer_could_not_be_rendered(tmp_path: Path) -> None:
    mapping = write(tmp_path, "fragile.yml", FRAGILE)
    handled = write(tmp_path, "handled.json", '{"user": "u", "text": "hi", "sep": ""}')
    ignored = write(tmp_path, "ignored.json", '{"user": "u", "text": "hello", "sep": ""}')
    after_rasa, _ = dry_run(mapping, "--body", handled)
    assert after_rasa["status"] == 200
    assert after_rasa["problem"] == f"the answer could not be rendered: {EMPTY_SEPARATOR}"
    nothing_handled, _ = dry_run(mapping, "--body", ignored)
    assert nothing_handled["status"] == 500
    assert nothing_handled["reason"] == EMPTY_SEPARATOR


FRAGILE_CASES = """
tests:
  - name: handled
    body: {"user": "u", "text": "hi", "sep": ""}
    expect: {response: [hi]}
  - name: ignored
    body: {"user": "u", "text": "hello", "sep": ""}
    expect: {status: 200}
"""


def test_a_failing_case_says_why_the_answer_could_not_be_rendered(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, "fragile.yml", FRAGILE + FRAGILE_CASES)
    code, out = validate(capsys, path)
    assert code == 1
    assert out[:2] == [
        f"{path}:11:5: fragile.tests[0]: test 'handled' failed: response: expected [\"hi\"], "
        'got {"error": "the answer could not be rendered", "handled": true} '
        f"(the answer could not be rendered: {EMPTY_SEPARATOR})",
        f"{path}:14:5: fragile.tests[1]: test 'ignored' failed: status: expected 200, got 500 "
        f"(500: the answer could not be rendered; {EMPTY_SEPARATOR})",
    ]


COUNTED = """
tests:
  - name: two replies
    body: {"user": "u", "text": "hi"}
    env: {API_URL: "https://api.example.com", API_TOKEN: s3cret}
    replies: [{text: One}, {text: Two}]
    expect:
      outbound: [{body: {to: u, text: One}}]
  - name: not sent
    body: {"user": "u", "text": "hi"}
    env: {API_URL: "ftp://api.example.com", API_TOKEN: s3cret}
    replies: [{text: One}, {image: "https://x.png"}]
    expect:
      outbound: [{body: {to: u, text: One}}]
"""


def test_a_failing_outbound_count_shows_the_requests_and_the_problems(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, "sender.yml", SENDER + COUNTED)
    code, out = validate(capsys, path)
    assert code == 1
    assert out[:2] == [
        f"{path}:14:5: sender.tests[0]: test 'two replies' failed: outbound: expected 1 "
        'request, got 2: [{"method": "POST", "url": "${API_URL}/send", '
        '"body": {"to": "u", "text": "One"}}, {"method": "POST", "url": "${API_URL}/send", '
        '"body": {"to": "u", "text": "Two"}}]',
        f"{path}:20:5: sender.tests[1]: test 'not sent' failed: outbound: expected 1 "
        'request, got 0 (problems: ["a text message: outbound.text.url gave no http(s) URL '
        'with a host; not sent", "image messages: the mapping has no outbound template for '
        'them; not sent"])',
    ]
    assert "s3cret" not in "\n".join(out)


SIGNED = """
name: signed
auth:
  type: expression
  expected: "hmac('sha256', env('HOOK_SECRET'), join('.', [header('X-Time'), raw_body()]), 'hex')"
  given: header('X-Signature')
  timestamp: {value: "header('X-Time')", format: unix, tolerance: 300}
request: {sender: user, text: text}
tests:
  - name: an object body signed as it is sent
    body: {user: u-1, text: "héllo"}
    headers: {X-Time: "1700000000"}
    env: {HOOK_SECRET: hook-s3cret}
    time: 1700000010
    sign:
      X-Signature: >-
        hmac('sha256', env('HOOK_SECRET'), join('.', [header('X-Time'), raw_body()]), 'hex')
    expect: {sender: u-1, text: "héllo"}
"""


def test_a_case_signs_its_object_body_as_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, lines = validate(capsys, write(tmp_path, "signed.yml", SIGNED))
    assert code == 0, lines
    assert lines[0].endswith("ok (signed, 1 test case passed; reads HOOK_SECRET)")
    # Signed with another secret: the channel refuses it, and the case says so.
    signing = "X-Signature: >-\n        hmac('sha256', "
    wrong = SIGNED.replace(signing + "env('HOOK_SECRET')", signing + "'guessed'")
    assert wrong != SIGNED
    code, lines = validate(capsys, write(tmp_path, "wrong.yml", wrong))
    assert code == 1
    assert "test 'an object body signed as it is sent' failed" in "\n".join(lines)


def test_a_ready_mapping_is_named_without_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `mapping: myio` in credentials.yml: an installed user has no mappings/ folder."""
    monkeypatch.chdir(tmp_path)
    body = write(tmp_path, "body.json", '{"sender": "u1", "message": "hello"}')
    result, _ = dry_run("myio", "--body", body, "--reply", "Hi!")
    assert [m["sender"] for m in result["messages"]] == ["u1"]
    assert result["response"]["body"] == [{"recipient_id": "u1", "text": "Hi!"}]
