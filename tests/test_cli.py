"""The validation command: one located finding per problem, exit codes, dry run."""

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List
from unittest import mock

import pytest

from generic_connector.cli import main

ROOT = Path(__file__).resolve().parent.parent

GOOD_MAPPING = """\
name: m
request:
  sender: user.id
  text: message.text
"""


def run(capsys: pytest.CaptureFixture, *args: str) -> "tuple[int, List[str]]":
    code = main(list(args))
    return code, capsys.readouterr().out.splitlines()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_mappings_and_credentials_are_valid_and_their_cases_pass(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, out = run(capsys, "validate", "mappings/", "credentials.yml")
    assert code == 0, out
    assert "mappings/myio.yml: ok (myio, 4 test cases passed)" in out
    assert out[-1].endswith("invalid, 0 findings")


@pytest.mark.parametrize(
    "mapping, finding",
    [
        (
            GOOD_MAPPING.replace("message.text", "message text"),
            ":4:3: m.request.text: expression does not compile: "
            "`text` at column 9 follows `message` with nothing joining them (join them with an "
            "operator: message.text for a path, message || text for either; a key holding a "
            'space is quoted: "message text")',
        ),
        (
            GOOD_MAPPING + "respones:\n  status: 200\n",
            ":5:1: m.respones: unknown key 'respones' (did you mean 'response'?)",
        ),
        (
            GOOD_MAPPING.replace("  text: message.text\n", ""),
            ":2:1: m.request.text: missing required key 'text' (add it)",
        ),
        (
            GOOD_MAPPING + "response:\n  status: ok\n",
            ":6:3: m.response.status: must be an integer, got a string",
        ),
        (
            GOOD_MAPPING + "outbound:\n  text:\n    body: '{text: message.text}'\n",
            ":6:3: m.outbound.text: no url for this kind of message "
            "(give it here or in outbound.defaults)",
        ),
        (
            GOOD_MAPPING + "outbound:\n  text:\n    url: event.reply_to\n",
            ":7:5: m.outbound.text.url: the URL is built from request data "
            "(list the hosts it may call in outbound.allow_hosts)",
        ),
    ],
    ids=[
        "bad expression",
        "unknown key",
        "missing key",
        "wrong type",
        "outbound without url",
        "url from request data",
    ],
)
def test_finding_is_located_and_explained(
    capsys: pytest.CaptureFixture, tmp_path: Path, mapping: str, finding: str
) -> None:
    path = write(tmp_path, "m.yml", mapping)
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert out[0] == path + finding


def test_missing_referenced_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "credentials.yml",
        "rest:\nslack:\n  slack_token: xoxb\n"
        "generic_connector.channels.shop:\n  mapping: nowhere/shop.yml\n",
    )
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert out[0] == (
        f"{path}:5:3: mapping: mapping file 'nowhere/shop.yml' not found "
        "(relative paths start from the directory rasa run is started in)"
    )


def test_failing_mapping_test_case(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    cases = """
tests:
  - name: passes
    body: {"user": {"id": 7}, "message": {"text": "hi"}}
    expect: {sender: "7", text: hi}
  - name: wrong expectation
    body: {"user": {"id": 7}, "message": {"text": "hi"}}
    expect: {sender: "8", text: hi}
  - name: missing body file
    body_file: captured/update.json
    expect: {status: 200}
"""
    path = write(tmp_path, "m.yml", GOOD_MAPPING + cases)
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert out[:2] == [
        f"{path}:10:5: m.tests[1]: test 'wrong expectation' failed: "
        'sender: expected "8", got "7"',
        f"{path}:13:5: m.tests[2]: test 'missing body file' failed: "
        "body file 'captured/update.json' not found",
    ]


def test_every_finding_is_reported_in_one_run(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = write(tmp_path, "m.yml", "name: m\nrequest:\n  sender: a[\n  txt: b\n")
    code, out = run(capsys, "validate", path)
    assert code == 1
    assert [line.split(": ")[1] for line in out[:3]] == [
        "m.request.text",  # missing: located at the request key
        "m.request.sender",
        "m.request.txt",
    ]
    assert out[-1] == "1 file: 0 valid, 1 invalid, 3 findings"


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"name: [unclosed\n",
            ":2:1: : not valid YAML: expected ',' or ']', but got '<stream end>'",
        ),
        (b"", ":1:1: : the file is empty"),
        (b"- name: a\n- name: b\n", ":1:1: : must be a mapping of keys, not a list or a value"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", ": : not a text file (not UTF-8)"),
    ],
)
def test_files_that_are_not_mappings(
    capsys: pytest.CaptureFixture, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.yml"
    path.write_bytes(content)
    code, out = run(capsys, "validate", str(path))
    assert code == 1
    assert out[0] == str(path) + message


def test_other_channels_in_credentials_are_left_alone(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    path = write(
        tmp_path,
        "credentials.yml",
        "rest:\nslack:\n  not_a_generic_key: 1\nrasa:\n  url: http://x\n"
        "generic_connector.GenericChannel:\n  mapping: mappings/myio.yml\n",
    )
    code, out = run(capsys, "validate", path)
    assert (code, out[0]) == (0, f"{path}: ok (myio)")


def test_json_format(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = write(tmp_path, "m.yml", GOOD_MAPPING.replace("sender:", "sendr:"))
    code, out = run(capsys, "validate", "--format", "json", path)
    report = json.loads("\n".join(out))
    assert code == 1 and report["valid"] is False
    [file] = report["files"]
    assert file["findings"][0] == {
        "file": path,
        "line": 2,
        "column": 1,
        "path": "m.request.sender",
        "message": "missing required key 'sender'",
        "hint": "add it",
    }
    assert file["findings"][1]["hint"] == "did you mean 'sender'?"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["validate", str(tmp_path / "missing.yml")])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        main(["frobnicate"])
    assert raised.value.code == 2


def dry_run(*args: str) -> Dict[str, Any]:
    """``generic-connector dry-run ARGS`` run from the repository's root: its JSON output.

    In this process (the console script and ``python -m`` are run by test_packaging): the
    variables ``--env`` sets are taken back afterwards, as the command's process would end.
    """
    output = io.StringIO()
    here = os.getcwd()
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(output):
        os.chdir(ROOT)
        try:
            code = main(["dry-run", *args])
        finally:
            os.chdir(here)
    result = json.loads(output.getvalue())
    assert code == (1 if result["status"] >= 400 else 0)  # 1: the channel would refuse or fail
    return result


def test_dry_run_prints_extraction_and_response(tmp_path: Path) -> None:
    body = write(tmp_path, "body.json", '{"sender": "u1", "message": "hello"}')
    assert dry_run("mappings/myio.yml", "--body", body, "--reply", "Hi!") == {
        "status": 200,
        "messages": [
            {
                "sender": "u1",
                "text": "hello",
                "input_channel": "myio",
                "metadata": None,
                "message_id": None,
            }
        ],
        "ignored": [],
        "response": {
            "content_type": "application/json",
            "headers": {},
            "body": [{"recipient_id": "u1", "text": "Hi!"}],
        },
    }


def test_dry_run_shows_why_a_request_would_be_rejected(tmp_path: Path) -> None:
    body = write(tmp_path, "body.json", '{"message": "hello"}')
    result = dry_run("credentials.yml", "--channel", "myio", "--body", body)
    assert result["error"] == {
        "error": "no sender in the request: `sender` found nothing",
        "field": "sender",
        "expression": "sender",
    }


HEADER_MAPPING = """
name: tenants
request:
  sender: user
  text: text
  metadata: "{tenant: header('X-Tenant')}"
"""


def test_dry_run_header_names_are_case_insensitive(tmp_path: Path) -> None:
    mapping = write(tmp_path, "tenants.yml", HEADER_MAPPING)
    body = write(tmp_path, "body.json", '{"user": "u", "text": "hi"}')
    for header in ("X-Tenant: acme", "x-tenant: acme", "X-TENANT: acme"):
        result = dry_run(mapping, "--body", body, "--header", header)
        assert result["messages"][0]["metadata"] == {"tenant": "acme"}, header


SIGNED_MAPPING = """
name: signed
auth: {type: token, header: X-Token, secret_env: SIGNED_TOKEN}
request: {sender: user, text: text}
handshakes:
  - name: ping
    method: GET
    path: /ping
    response: {body: "'pong'", content_type: text/plain}
outbound:
  text:
    url: join('', ['https://api.infobip.example/send/', env('SIGNED_TOKEN')])
    headers: {Authorization: "join(' ', ['App', env('SIGNED_TOKEN')])"}
    body: >-
      {to: recipient, text: message.text, key: env('SIGNED_TOKEN'),
       buttons: message.buttons[].title}
"""


def test_dry_run_env_method_path_and_the_reason_of_a_401(tmp_path: Path) -> None:
    mapping = write(tmp_path, "signed.yml", SIGNED_MAPPING)
    body = write(tmp_path, "body.json", '{"user": "u", "text": "hi"}')
    refused = dry_run(
        mapping,
        "--body",
        body,
        "--env",
        "SIGNED_TOKEN=infobip",
        "--header",
        "X-Token: no",
    )
    assert refused["status"] == 401
    assert refused["error"] == {"error": "unauthorized"}
    assert refused["reason"] == "token does not match"
    pong = dry_run(
        mapping, "--body", body, "--env", "SIGNED_TOKEN=infobip",
        "--method", "GET", "--path", "/ping",
    )  # fmt: skip
    assert (pong["status"], pong["response"]["body"]) == (200, "pong")


def test_dry_run_masks_secrets_by_exact_value_and_takes_rich_replies(tmp_path: Path) -> None:
    mapping = write(tmp_path, "signed.yml", SIGNED_MAPPING)
    body = write(tmp_path, "body.json", '{"user": "u", "text": "hi"}')
    replies = write(
        tmp_path,
        "replies.json",
        '[{"text": "Pick", "buttons": [{"title": "Yes", "payload": "/y"}]}]',
    )
    result = dry_run(
        mapping, "--body", body, "--env", "SIGNED_TOKEN=infobip",
        "--header", "X-Token: infobip", "--replies", replies,
    )  # fmt: skip
    assert result["status"] == 200
    [request] = result["outbound"]
    # The host's "infobip" is part of the URL, not the secret: only the secret is masked.
    assert request["url"] == "https://api.infobip.example/send/${SIGNED_TOKEN}"
    assert request["headers"]["Authorization"] == "App ${SIGNED_TOKEN}"
    assert request["body"] == {
        "to": "u",
        "text": "Pick",
        "key": "${SIGNED_TOKEN}",
        "buttons": ["Yes"],
    }
