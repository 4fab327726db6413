"""The playground's API without a browser: its handlers called directly, and once over HTTP.

The page's own behaviour in a real browser is tests/test_playground_browser.py.
"""

import fnmatch
import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

from generic_connector.auth._keys import KeySet
from generic_connector.cli import _parser
from generic_connector.cli.playground import (
    ASSETS,
    STATIC,
    Playground,
    PlaygroundError,
    PlaygroundServer,
    _no_key_servers,
    append_case,
)
from generic_connector.cli.validate import validate_file

ROOT = Path(__file__).resolve().parent.parent
EXPRESSION = "text: \"trim(regex_replace(event.text, '<@[A-Z0-9]+>', ''))\""


@pytest.fixture
def slack(tmp_path: Path) -> Playground:
    """A copy of the ready Slack mapping: signed test cases at a fixed time."""
    path = tmp_path / "slack.yml"
    shutil.copy(ROOT / "mappings" / "slack.yml", path)
    return Playground.open(str(path))


def case(playground: Playground, number: int) -> Dict[str, Any]:
    return playground.cases()["cases"][number]


def run(playground: Playground, shown: Dict[str, Any], **changes: Any) -> Dict[str, Any]:
    payload = {
        "mapping_text": playground.text,
        "request": shown["request"],
        "env": shown.get("env", {}),
        "replies": shown.get("replies", []),
        "time": shown.get("time"),
        **changes,
    }
    return playground.run(payload)


def stage(result: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    return next((s for s in result["stages"] if s["stage"] == name), None)


def test_check_locates_a_broken_expression(slack: Playground) -> None:
    assert EXPRESSION in slack.text
    line = slack.text[: slack.text.index(EXPRESSION)].count("\n") + 1
    answer = slack.check({"mapping_text": slack.text.replace(EXPRESSION, "text: event..text")})
    assert answer["valid"] is False
    [finding] = answer["findings"]
    assert (finding["line"], finding["column"]) == (line, 3)
    assert finding["path"] == "slack.request.text"  # the file's name, not the scratch copy's
    assert finding["message"].startswith("expression does not compile")
    assert finding["hint"]
    assert finding["file"] == str(slack.path)
    # The scratch copy beside the file is gone.
    assert sorted(p.name for p in slack.path.parent.iterdir()) == ["slack.yml"]


def test_check_of_the_ready_mapping(slack: Playground) -> None:
    answer = slack.check({"mapping_text": slack.text})
    assert answer["valid"] and answer["findings"] == []
    assert answer["tests"] == {"passed": 7, "failed": 0}
    assert answer["env"] == ["SLACK_API_URL", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
    assert answer["secrets"] == ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]


def test_cases_are_requests_as_sent(slack: Playground) -> None:
    answer = slack.cases()
    assert answer["text"] == slack.text and answer["sample_replies"]
    first = answer["cases"][0]
    assert first["label"] == "tests[0]: a message in a channel"
    request = first["request"]
    assert request["method"] == "POST" and request["path"] == "/webhook"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"])["event"]["text"] == "Live long and prospect."
    assert first["env"] == {"SLACK_SIGNING_SECRET": "slack-signing-secret"}
    assert first["time"] == 1531420623
    # A copy of a ready mapping offers its cases once.
    assert len(answer["cases"]) == 7


def test_run_gives_the_mapped_text_and_a_changed_expression_changes_it(
    slack: Playground,
) -> None:
    first = case(slack, 0)
    result = run(slack, first)
    assert result["status"] == 200
    assert [m["text"] for m in result["messages"]] == ["Live long and prospect."]
    changed = slack.text.replace(EXPRESSION, "text: event.user")
    result = run(slack, first, mapping_text=changed)
    assert [m["text"] for m in result["messages"]] == ["U123ABC456"]
    assert [s["stage"] for s in result["stages"]] == [
        "auth", "handshake", "events", "answer", "outbound"
    ]  # fmt: skip
    # An invalid mapping is not run.
    broken = run(slack, first, mapping_text=slack.text.replace(EXPRESSION, "text: a..b"))
    assert broken == {"invalid": True, "stages": []}


def test_a_signed_case_passes_auth_and_another_secret_is_refused_with_the_reason(
    slack: Playground, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = case(slack, 2)
    result = run(slack, signed)
    assert stage(result, "auth") == {
        "stage": "auth", "outcome": "passed", "detail": "the request is authentic"
    }  # fmt: skip
    # The server's own environment does not count: only the page's variables do.
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "slack-signing-secret")
    env = {**signed["env"], "SLACK_SIGNING_SECRET": "another-secret"}
    refused = run(slack, signed, env=env)
    assert refused["status"] == 401
    auth = stage(refused, "auth")
    assert auth is not None and auth["outcome"] == "refused"
    assert "signature" in auth["detail"] and auth["detail"] == refused["reason"]
    assert "another-secret" not in json.dumps(refused)
    # Outside the signature's time window: refused, and said so.
    late = run(slack, signed, time=signed["time"] + 3600)
    auth = stage(late, "auth")
    assert auth is not None and auth["outcome"] == "refused"


def test_outbound_requests_show_variables_by_name(slack: Playground) -> None:
    signed = case(slack, 2)
    buttons = {"text": "Pick one", "buttons": [{"title": "Yes", "payload": "/affirm"}]}
    result = run(slack, signed, replies=[buttons])
    [request] = result["outbound"]
    assert request["headers"]["Authorization"] == "Bearer ${SLACK_BOT_TOKEN}"
    actions = request["body"]["blocks"][1]
    assert actions["type"] == "actions" and actions["elements"][0]["value"] == "/affirm"
    assert signed["env"]["SLACK_BOT_TOKEN"] not in json.dumps(result)
    assert stage(result, "outbound") is not None


def test_a_new_case_is_appended_with_the_comments_kept_and_validate_passes_it(
    slack: Playground,
) -> None:
    signed = case(slack, 2)
    payload = {
        "mapping_text": slack.text,
        "name": "a button reply",
        "request": signed["request"],
        "env": signed["env"],
        "time": signed["time"],
        "replies": [{"text": "Pick one", "buttons": [{"title": "Yes", "payload": "/affirm"}]}],
    }
    answer = slack.add_case(payload)
    text = answer["mapping_text"]
    assert text.startswith(slack.text)  # every line, every comment, as it was
    assert text[len(slack.text) :].startswith("- name: a button reply\n")
    expect = answer["case"]["expect"]
    assert expect["status"] == 200 and expect["text"] == "Live long and prospect."
    assert expect["outbound"][0]["url"] == "https://slack.com/api/chat.postMessage"
    assert isinstance(answer["case"]["body"], dict)  # the same bytes as its JSON
    assert slack.path.read_text(encoding="utf-8") == slack.text  # not saved until asked
    slack.save({"mapping_text": text})
    report = validate_file(slack.path, check_env=False)
    assert report.valid, [str(f) for f in report.findings]
    assert report.tests_passed == 8
    # A refused request makes a case too.
    refused = slack.add_case({**payload, "env": {"SLACK_SIGNING_SECRET": "wrong"}})
    assert refused["case"]["expect"] == {"status": 401, "error": "unauthorized"}


def test_append_case_inserts_after_the_last_item_before_what_follows() -> None:
    text = (
        "name: m  # a comment\n"
        "request: {sender: s, text: t}\n"
        "tests:\n"
        "  - name: one\n"
        "    body: {s: a, t: b}\n"
        "    expect: {text: b}  # kept\n"
        "# a closing comment\n"
        "description: after the tests\n"
    )
    appended = append_case(text, {"name": "two", "body": {"s": "c", "t": "d"}})
    assert appended.splitlines()[6:9] == [
        "  - name: two",
        "    body:",
        "      s: c",
    ]
    assert appended.endswith("# a closing comment\ndescription: after the tests\n")
    assert "    expect: {text: b}  # kept\n" in appended
    # Without tests: a list at the end; an empty one is filled.
    bare = "name: m\nrequest: {sender: s, text: t}\n"
    assert append_case(bare, {"name": "x"}) == bare + "tests:\n- name: x\n"
    empty = "name: m\ntests: []\nrequest: {sender: s, text: t}\n"
    assert append_case(empty, {"name": "x"}) == (
        "name: m\ntests:\n- name: x\nrequest: {sender: s, text: t}\n"
    )
    with pytest.raises(PlaygroundError):
        append_case("tests: {a: 1}\n", {"name": "x"})


def test_a_captured_request_becomes_the_pages_request(slack: Playground) -> None:
    captured = {
        "name": "request 1: POST /webhooks/slack/webhook",
        "method": "POST",
        "path": "/webhook",
        "headers": {"Content-Type": "application/json", "X-Slack-Signature": "<redacted>"},
        "query": {},
        "body": {"type": "event_callback", "event": {"type": "message", "user": "U1"}},
        "expect": {},
    }
    shown = slack.request({"mapping_text": slack.text, "case": captured})
    assert json.loads(shown["request"]["body"]) == captured["body"]
    assert shown["request"]["headers"]["X-Slack-Signature"] == "<redacted>"
    with pytest.raises(PlaygroundError):
        slack.request({"mapping_text": slack.text, "case": "not a case"})


def test_key_servers_are_not_called() -> None:
    keys = KeySet.__new__(KeySet)
    with _no_key_servers():
        import asyncio

        with pytest.raises(Exception, match="does not fetch keys"):
            asyncio.run(KeySet._get_json(keys, "https://keys.example.com/jwks"))
    assert KeySet._get_json.__name__ == "_get_json"


def test_a_ready_mapping_by_name_is_saved_here_not_in_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    playground = Playground.open("telegram")
    assert playground.path == Path("telegram.yml") and playground.ready == "telegram"
    playground.save({"mapping_text": playground.text})
    assert (tmp_path / "telegram.yml").read_text(encoding="utf-8") == playground.text
    with pytest.raises(PlaygroundError):
        Playground.open("telgram")


# --- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def served(slack: Playground) -> Iterator[PlaygroundServer]:
    server = PlaygroundServer(slack)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def fetch(
    url: str, payload: Any = None, headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Dict[str, str], bytes]:
    data = None if payload is None else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json"} if payload is not None else {}
    request = urllib.request.Request(url, data=data, headers={**sent, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_server_listens_on_127_0_0_1_only(served: PlaygroundServer) -> None:
    assert served.server_address[0] == "127.0.0.1"
    assert not served.open_to_all
    args = _parser().parse_args(["playground", "mappings/slack.yml"])
    assert (args.host, args.port) == ("127.0.0.1", 5080)


def test_the_page_and_the_api_over_http(served: PlaygroundServer) -> None:
    status, headers, page = fetch(served.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    html = page.decode()
    assert '<script src="/static/playground.js"' in html and "http" not in html.split("<body")[0]
    for name in STATIC:
        status, _, content = fetch(served.url + "static/" + name)
        assert status == 200 and content == (ASSETS / name).read_bytes()
    assert fetch(served.url + "static/../playground.py")[0] == 404
    status, _, body = fetch(served.url + "api/schema")
    assert status == 200 and "request" in json.loads(body)["properties"]
    status, _, body = fetch(served.url + "api/check", {"mapping_text": "name: x\n"})
    assert status == 200 and json.loads(body)["findings"]
    # Not JSON, or for another host name (a page elsewhere, through DNS): refused.
    plain = urllib.request.Request(served.url + "api/save", data=b"mapping_text=x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(plain, timeout=10)
    assert refused.value.code == 400
    status, _, _ = fetch(served.url + "api/cases", headers={"Host": "evil.example:5080"})
    assert status == 403
    status, _, body = fetch(served.url + "api/run", {"mapping_text": 3})
    assert status == 400 and "mapping_text" in json.loads(body)["error"]


def test_the_assets_ship_nothing_from_elsewhere() -> None:
    for name in ["playground.html", *STATIC]:
        text = (ASSETS / name).read_text(encoding="utf-8")
        for line in text.splitlines():
            if "src=" in line or "href=" in line or "@import" in line or "url(" in line:
                assert "//" not in line, (name, line)


def test_the_assets_are_package_data() -> None:
    """The wheel carries the page: pyproject.toml's package data names every asset."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("generic_connector = ["))
    patterns = json.loads(line.split("=", 1)[1])
    for asset in ASSETS.iterdir():
        name = f"playground/{asset.name}"
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
