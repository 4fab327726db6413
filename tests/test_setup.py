"""``generic-connector setup``: the mapping's setup requests against a local stand-in for the
platform's API (a real HTTP server), the dry run, the URL checks and the findings of
``validate`` for setup sections."""

import json
import os
from pathlib import Path
from typing import Iterator, List, Tuple
from unittest import mock

import pytest

from generic_connector.cli import main
from generic_connector.config import check_channel
from tests.platform_api import PlatformAPI

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456789:AAE-bot-token-value"
SECRET_TOKEN = "secret_token-value-42"
WEBHOOK = "https://bot.example.com/webhooks/telegram/webhook"
WEBHOOK_SET = {"ok": True, "result": True, "description": "Webhook was set"}


@pytest.fixture
def api() -> Iterator[PlatformAPI]:
    server = PlatformAPI()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each command from the repository's root, in an environment given back afterwards,
    without the variables the ready mappings read."""
    monkeypatch.chdir(ROOT)
    with mock.patch.dict(os.environ):
        for name in list(os.environ):
            if name.startswith(("TELEGRAM_", "VIBER_", "LINE_")):
                del os.environ[name]
        yield


def telegram_env(api: PlatformAPI) -> List[str]:
    return [
        "--env", f"TELEGRAM_API_URL={api.url}",
        "--env", f"TELEGRAM_BOT_TOKEN={BOT_TOKEN}",
        "--env", f"TELEGRAM_SECRET_TOKEN={SECRET_TOKEN}",
    ]  # fmt: skip


def run(capsys: pytest.CaptureFixture, *args: str) -> Tuple[int, str]:
    code = main(["setup", *args])
    return code, capsys.readouterr().out


def usage_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """What the command says on standard error when it exits 2."""
    with pytest.raises(SystemExit) as raised:
        main(["setup", *args])
    assert raised.value.code == 2
    return capsys.readouterr().err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# Against a stand-in API -----------------------------------------------------------------------


def test_telegram_set_webhook_is_called_with_the_url_and_the_secret_token(
    api: PlatformAPI, capsys: pytest.CaptureFixture
) -> None:
    api.plan(lambda r: r.path.endswith("/setWebhook"), [(200, {}, WEBHOOK_SET)])
    code, out = run(capsys, "telegram", "--url", WEBHOOK, *telegram_env(api))
    assert code == 0, out
    [request] = api.requests
    assert request.method == "POST"
    assert request.path == "/bot123456789:AAE-bot-token-value/setWebhook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "url": "https://bot.example.com/webhooks/telegram/webhook",
        "secret_token": "secret_token-value-42",
        "allowed_updates": ["message", "callback_query"],
    }
    assert out.splitlines() == [
        f"Channel telegram: registering {WEBHOOK}",
        "setWebhook: POST ${TELEGRAM_API_URL}/bot${TELEGRAM_BOT_TOKEN}/setWebhook",
        '  done: HTTP 200: {"ok": true, "result": true, "description": "Webhook was set"}',
        f"1 setup request done: the platform sends the channel's webhooks to {WEBHOOK}",
    ]
    assert "TELEGRAM_" not in os.environ  # --env is taken back afterwards


@pytest.mark.parametrize("status", [200, 400])
def test_a_refused_webhook_exits_1_with_the_description_and_no_secret(
    api: PlatformAPI, capsys: pytest.CaptureFixture, status: int
) -> None:
    # The platform echoes the request's URL and the secret token: both are cut out.
    refusal = {
        "ok": False,
        "description": "Bad Request: bad webhook",
        "echo": f"{api.url}/bot{BOT_TOKEN}/setWebhook secret {SECRET_TOKEN}",
    }
    api.plan(lambda r: True, [(status, {}, refusal)])
    code, out = run(capsys, "telegram", "--url", WEBHOOK, *telegram_env(api))
    assert code == 1, out
    assert "Bad Request: bad webhook" in out
    assert BOT_TOKEN not in out and "123456789" not in out
    assert SECRET_TOKEN not in out
    assert "failed: HTTP" in out
    assert "setWebhook failed, so the webhook is not (fully) registered" in out


def test_viber_set_webhook_with_its_auth_header_and_status_0(
    api: PlatformAPI, capsys: pytest.CaptureFixture
) -> None:
    answer = {"status": 0, "status_message": "ok", "event_types": ["conversation_started"]}
    api.plan(lambda r: r.path == "/pa/set_webhook", [(200, {}, answer)])
    env = ["--env", f"VIBER_API_URL={api.url}/pa", "--env", "VIBER_AUTH_TOKEN=445da6az1s345z78"]
    url = "https://bot.example.com/webhooks/viber/webhook"
    code, out = run(capsys, "viber", "--url", url, *env)
    assert code == 0, out
    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/pa/set_webhook")
    assert request.headers["X-Viber-Auth-Token"] == "445da6az1s345z78"
    assert request.json == {
        "url": "https://bot.example.com/webhooks/viber/webhook",
        "event_types": ["conversation_started"],
        "send_name": True,
        "send_photo": False,
    }


def test_viber_answering_a_status_other_than_0_is_a_failure(
    api: PlatformAPI, capsys: pytest.CaptureFixture
) -> None:
    answer = {"status": 1, "status_message": "invalidUrl"}
    api.plan(lambda r: True, [(200, {}, answer)])
    env = ["--env", f"VIBER_API_URL={api.url}/pa", "--env", "VIBER_AUTH_TOKEN=445da6az1s345z78"]
    url = "https://bot.example.com/webhooks/viber/webhook"
    code, out = run(capsys, "viber", "--url", url, *env)
    assert code == 1
    assert "success (status == `0`) is not true" in out and "invalidUrl" in out


def test_line_puts_the_endpoint_with_the_channel_access_token(
    api: PlatformAPI, capsys: pytest.CaptureFixture
) -> None:
    api.plan(lambda r: True, [(200, {}, {})])
    env = ["--env", f"LINE_API_URL={api.url}", "--env", "LINE_CHANNEL_ACCESS_TOKEN=line-access"]
    url = "https://bot.example.com/webhooks/line/webhook"
    code, out = run(capsys, "line", "--url", url, *env)
    assert code == 0, out
    [request] = api.requests
    assert (request.method, request.path) == ("PUT", "/v2/bot/channel/webhook/endpoint")
    assert request.headers["Authorization"] == "Bearer line-access"
    assert request.json == {"endpoint": "https://bot.example.com/webhooks/line/webhook"}
    assert "done: HTTP 200: {}" in out


TWO_STEPS = """\
name: two
request: {sender: sender, text: text}
setup:
  - name: first
    url: join('', [env('API_URL'), '/first'])
    body: "{hook: url, channel: channel}"
    success: ok
  - name: second
    url: join('', [env('API_URL'), '/second'])
"""


def test_the_first_failure_stops_the_others(
    api: PlatformAPI, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    api.plan(lambda r: True, [(500, {}, {"ok": False})])
    mapping = write(tmp_path, "two.yml", TWO_STEPS)
    url = "http://127.0.0.1:5005/webhooks/two/webhook"  # http: for this machine only
    code, out = run(capsys, mapping, "--url", url, "--env", f"API_URL={api.url}")
    assert code == 1
    assert [r.path for r in api.requests] == ["/first"]
    assert api.requests[0].json == {"hook": url, "channel": "two"}
    assert "first: POST ${API_URL}/first\n  failed: HTTP 500" in out
    assert "second: POST ${API_URL}/second\n  not sent: a request before it failed" in out


def test_a_host_outside_outbound_allow_hosts_is_not_sent_to(
    api: PlatformAPI, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    text = TWO_STEPS + "outbound:\n  allow_hosts: [api.example.com]\n  text: {url: \"'x'\"}\n"
    mapping = write(tmp_path, "two.yml", text)
    url = "https://bot.example.com/webhooks/two/webhook"
    code, out = run(capsys, mapping, "--url", url, "--env", f"API_URL={api.url}")
    assert code == 1
    assert api.requests == []
    assert "not in outbound.allow_hosts" in out


def test_a_credentials_entry_naming_the_ready_mapping(
    api: PlatformAPI, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    credentials = write(
        tmp_path,
        "credentials.yml",
        "rest:\ngeneric_connector.channels.telegram:\n  mapping: telegram\n"
        "generic_connector.GenericChannel:\n  mapping: myio\n",
    )
    code, out = run(
        capsys, credentials, "--channel", "telegram", "--url", WEBHOOK, *telegram_env(api)
    )
    assert code == 0, out
    assert len(api.requests) == 1
    error = usage_error(capsys, credentials, "--url", WEBHOOK, *telegram_env(api))
    assert "holds several generic channels" in error and "--channel" in error


# The dry run -----------------------------------------------------------------------------------


def test_the_dry_run_sends_nothing_and_shows_variables_by_name(
    api: PlatformAPI, capsys: pytest.CaptureFixture
) -> None:
    env = [
        "--env",
        f"TELEGRAM_BOT_TOKEN={BOT_TOKEN}",
        "--env",
        f"TELEGRAM_SECRET_TOKEN={SECRET_TOKEN}",
    ]
    code, out = run(capsys, "telegram", "--url", WEBHOOK, "--dry-run", *env)
    assert code == 0, out
    assert api.requests == []
    assert out.splitlines() == [
        f"Channel telegram: registering {WEBHOOK} (dry run: nothing is sent)",
        "setWebhook: POST https://api.telegram.org/bot${TELEGRAM_BOT_TOKEN}/setWebhook",
        "  Content-Type: application/json",
        '  {"url": "https://bot.example.com/webhooks/telegram/webhook", '
        '"secret_token": "${TELEGRAM_SECRET_TOKEN}", '
        '"allowed_updates": ["message", "callback_query"]}',
        "1 setup request can be sent; run again without --dry-run to send",
    ]
    assert BOT_TOKEN not in out and SECRET_TOKEN not in out


def test_the_json_output(api: PlatformAPI, capsys: pytest.CaptureFixture) -> None:
    api.plan(lambda r: True, [(200, {}, WEBHOOK_SET)])
    code, out = run(capsys, "telegram", "--url", WEBHOOK, "--format", "json", *telegram_env(api))
    assert code == 0
    assert json.loads(out) == {
        "channel": "telegram",
        "url": WEBHOOK,
        "dry_run": False,
        "ok": True,
        "requests": [
            {
                "name": "setWebhook",
                "method": "POST",
                "url": "${TELEGRAM_API_URL}/bot${TELEGRAM_BOT_TOKEN}/setWebhook",
                "headers": {"Content-Type": "application/json"},
                "body": {
                    "url": WEBHOOK,
                    "secret_token": "${TELEGRAM_SECRET_TOKEN}",
                    "allowed_updates": ["message", "callback_query"],
                },
                "allowed": True,
                "outcome": "done",
                "status": 200,
                "answer": WEBHOOK_SET,
            }
        ],
    }
    code, out = run(capsys, "telegram", "--url", WEBHOOK, "--dry-run", "--format", "json",
                    *telegram_env(api))  # fmt: skip
    report = json.loads(out)
    assert (code, report["dry_run"], report["ok"]) == (0, True, True)
    assert report["requests"][0]["outcome"] == "not sent"
    assert "status" not in report["requests"][0]


# Usage errors ----------------------------------------------------------------------------------


def test_an_http_url_to_a_public_host_is_refused(capsys: pytest.CaptureFixture) -> None:
    url = "http://bot.example.com/webhooks/telegram/webhook"
    error = usage_error(capsys, "telegram", "--url", url, "--dry-run")
    assert "--url must be an https URL" in error
    assert "http is accepted for 127.0.0.1 and localhost" in error


def test_the_url_must_end_with_the_channels_webhook_path(capsys: pytest.CaptureFixture) -> None:
    env = ["--env", "TELEGRAM_BOT_TOKEN=t", "--env", "TELEGRAM_SECRET_TOKEN=s"]
    for wrong in ("https://bot.example.com/", "https://bot.example.com/webhooks/tg/webhook"):
        error = usage_error(capsys, "telegram", "--url", wrong, "--dry-run", *env)
        assert (
            "--url must end with the path Rasa serves channel 'telegram' at, "
            "/webhooks/telegram/webhook; got the path" in error
        )
    # A prefix of a reverse proxy, and this machine over http, are fine.
    for right in (
        "https://example.com/rasa/webhooks/telegram/webhook",
        "http://localhost:5005/webhooks/telegram/webhook",
    ):
        assert run(capsys, "telegram", "--url", right, "--dry-run", *env)[0] == 0


def test_a_route_of_the_channel_is_a_webhook_path(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    text = TWO_STEPS + "routes:\n  - {method: POST, path: '/events/{kind}'}\n"
    mapping = write(tmp_path, "two.yml", text)
    url = "https://bot.example.com/webhooks/two/events/all"
    assert run(capsys, mapping, "--url", url, "--dry-run", "--env", "API_URL=https://a.b")[0] == 0
    error = usage_error(capsys, mapping, "--url", url + "/x", "--dry-run")
    assert "/webhooks/two/webhook (or one of its routes: /events/{kind})" in error


def test_a_mapping_without_setup(capsys: pytest.CaptureFixture) -> None:
    url = "https://bot.example.com/webhooks/myio/webhook"
    error = usage_error(capsys, "myio", "--url", url)
    assert (
        "channel myio: this mapping has no setup section; register the URL on the platform: "
        f"{url}" in error
    )


def test_variables_not_set_and_unknown_mappings(capsys: pytest.CaptureFixture) -> None:
    error = usage_error(capsys, "telegram", "--url", WEBHOOK, "--dry-run")
    assert "environment variables TELEGRAM_BOT_TOKEN, TELEGRAM_SECRET_TOKEN not set" in error
    error = usage_error(capsys, "telegramm", "--url", WEBHOOK)
    assert "no ready mapping 'telegramm'" in error and "did you mean 'telegram'?" in error


# What validate finds ---------------------------------------------------------------------------


def findings(setup: str, extra: str = "") -> List[str]:
    document = f"name: m\nrequest: {{sender: sender, text: text}}\n{extra}setup:\n{setup}"
    import yaml

    config, found, _ = check_channel(yaml.safe_load(document), "m")
    return [f"{f.path}: {f.message} ({f.hint})" for f in found]


def test_validate_finds_setup_requests_reading_what_they_never_have() -> None:
    found = findings(
        "  - name: a\n"
        "    url: join('', ['https://api.example.com/', event.id])\n"
        "    headers: {X-Token: \"header('X-Token')\"}\n"
        "    body: '{hook: url, to: recipient}'\n"
    )
    assert len(found) == 3, found
    assert found[0].startswith(
        "m.setup[0].url: `join('', ['https://api.example.com/', event.id])` reads 'event', "
        "which setup's data ({url, channel}) does not have: it is always null"
    )
    assert found[1].startswith("m.setup[0].body: `{hook: url, to: recipient}` reads 'recipient'")
    assert found[2].startswith(
        "m.setup[0].headers.X-Token: header() reads the webhook's request, which a setup "
        "request has none of"
    )


def test_validate_finds_a_setup_url_whose_host_is_not_fixed_and_names_given_twice() -> None:
    found = findings(
        "  - name: a\n    url: url\n  - name: a\n    url: \"'https://api.example.com'\"\n"
    )
    assert found == [
        "m.setup[0].url: the URL's host is built from {url, channel}, not the platform's API "
        "(write the API's URL as a literal or an env() base, or use allow_hosts)",
        "m.setup[1].name: setup request 'a' is declared twice (give each its own)",
    ]


def test_validate_accepts_the_ready_setup_sections_and_reads_their_variables() -> None:
    import yaml

    for name in ("telegram", "viber", "line"):
        document = yaml.safe_load((ROOT / "mappings" / f"{name}.yml").read_text())
        config, found, _ = check_channel(document, name)
        assert config is not None and not found, found
        assert [template.name for template in config.setup]
        names = {n for t in config.setup for e in t.expressions() for n in e.env_names}
        assert names <= set(config.env_names())


def test_an_access_token_from_the_tokens_section(
    api: PlatformAPI, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    api.plan(
        lambda r: r.path == "/token", [(200, {}, {"access_token": "at-98765", "expires_in": 60})]
    )
    text = (
        "name: oauth\nrequest: {sender: sender, text: text}\n"
        "tokens:\n  api:\n    url: join('', [env('API_URL'), '/token'])\n"
        "    body: \"{grant_type: 'client_credentials'}\"\n"
        "setup:\n  - name: register\n    url: join('', [env('API_URL'), '/hooks'])\n"
        "    headers: {Authorization: \"join(' ', ['Bearer', token('api')])\"}\n"
        "    body: '{url: url}'\n"
    )
    mapping = write(tmp_path, "oauth.yml", text)
    url = "https://bot.example.com/webhooks/oauth/webhook"
    code, out = run(capsys, mapping, "--url", url, "--env", f"API_URL={api.url}")
    assert code == 0, out
    assert [r.path for r in api.requests] == ["/token", "/hooks"]
    assert api.requests[1].headers["Authorization"] == "Bearer at-98765"
    assert "at-98765" not in out
