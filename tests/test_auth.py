"""Webhook authentication on the platforms' published examples, and what must fail."""

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from generic_connector.auth import AuthConfigError, AuthFailed, build_auth
from generic_connector.cli import main
from generic_connector.request import IncomingRequest

PAYLOADS = Path(__file__).resolve().parent / "payloads"
# Twilio's signature has no timestamp: any time will do.
ANY_TIME = 1_700_000_000.0


def check(
    auth: Dict[str, Any], request: IncomingRequest, body: Any = None, now: Optional[float] = None
) -> None:
    """Build the scheme from its section, as the channel does, and check one request."""
    asyncio.run(build_auth(auth).check(request, body, ANY_TIME if now is None else now))


def example(platform: str, name: str) -> Dict[str, Any]:
    return json.loads((PAYLOADS / platform / name).read_text())


SLACK = example("slack", "signature_example.json")
TWILIO = example("twilio", "signature_example.json")
STANDARD = example("standard-webhooks", "test_vector.json")

SLACK_AUTH = dict(
    type="hmac", secret_env="SLACK_SIGNING_SECRET", header="X-Slack-Signature", prefix="v0=",
    signed="v0:{timestamp}:{body}", timestamp_header="X-Slack-Request-Timestamp", max_age=300,
)  # fmt: skip
TWILIO_AUTH = dict(
    type="hmac", secret_env="TWILIO_AUTH_TOKEN", header="X-Twilio-Signature", algorithm="sha1",
    encoding="base64", signed="{url}{form_params}", public_url_env="TWILIO_WEBHOOK_URL",
)  # fmt: skip
STANDARD_AUTH = dict(
    type="hmac", secret_env="WEBHOOK_SECRET", secret_encoding="whsec", header="webhook-signature",
    prefix="v1,", separator=" ", encoding="base64", signed="{id}.{timestamp}.{body}",
    id_header="webhook-id", timestamp_header="webhook-timestamp",
)  # fmt: skip


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SLACK["signing_secret"])
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO["auth_token"])
    monkeypatch.setenv("TWILIO_WEBHOOK_URL", TWILIO["url"])
    monkeypatch.setenv("WEBHOOK_SECRET", STANDARD["secret"])


def slack_request(body: Optional[str] = None, **headers: str) -> IncomingRequest:
    return IncomingRequest.from_parts(
        (SLACK["body"] if body is None else body).encode(), {**SLACK["headers"], **headers}
    )


def twilio_body(params: Dict[str, str]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(params).encode()


def twilio_request(params: Optional[Dict[str, str]] = None, signature: Optional[str] = None):  # noqa: ANN201
    return IncomingRequest.from_parts(
        twilio_body(TWILIO["params"] if params is None else params),
        {"X-Twilio-Signature": signature or TWILIO["expected_signature"]},
    )


def standard_request(body: Optional[str] = None, **headers: str) -> IncomingRequest:
    return IncomingRequest.from_parts(
        (STANDARD["payload"] if body is None else body).encode(),
        {**STANDARD["headers"], **headers},
    )


SLACK_NOW = float(SLACK["timestamp"]) + 10
STANDARD_NOW = float(STANDARD["timestamp"]) + 10


def test_slack_signing_example_passes() -> None:
    check(SLACK_AUTH, slack_request(), now=SLACK_NOW)


def test_twilio_validation_example_passes() -> None:
    check(TWILIO_AUTH, twilio_request())


def test_standard_webhooks_test_vector_passes() -> None:
    check(STANDARD_AUTH, standard_request(), now=STANDARD_NOW)


def test_standard_webhooks_accepts_any_of_several_signatures() -> None:
    several = "v1,bm9wZQ== " + STANDARD["expected_signature"]
    check(STANDARD_AUTH, standard_request(**{"webhook-signature": several}), now=STANDARD_NOW)


@pytest.mark.parametrize(
    "auth, request_, now, reason",
    [
        (SLACK_AUTH, slack_request(SLACK["body"] + "&x=1"), SLACK_NOW, "signature does not match"),
        (SLACK_AUTH, slack_request(**{"X-Slack-Signature": "v0=" + "0" * 64}), SLACK_NOW,
         "signature does not match"),
        (SLACK_AUTH, slack_request(**{"X-Slack-Request-Timestamp": "1531420619"}), SLACK_NOW,
         "signature does not match"),
        (SLACK_AUTH, slack_request(), SLACK_NOW + 600,
         "timestamp outside the allowed 300 s window"),
        (SLACK_AUTH, slack_request(**{"X-Slack-Signature": ""}), SLACK_NOW,
         "no X-Slack-Signature header"),
        (TWILIO_AUTH, twilio_request({**TWILIO["params"], "Digits": "1235"}), None,
         "signature does not match"),
        (TWILIO_AUTH, twilio_request(signature="RSOYDt4T1cUTdK1PDd93/VVr8B9="), None,
         "signature does not match"),
        (STANDARD_AUTH, standard_request('{"test": 2432232315}'), STANDARD_NOW,
         "signature does not match"),
        (STANDARD_AUTH, standard_request(**{"webhook-id": "msg_other"}), STANDARD_NOW,
         "signature does not match"),
        (STANDARD_AUTH, standard_request(), STANDARD_NOW - 400,
         "timestamp outside the allowed 300 s window"),
    ],
    ids=[
        "slack changed body", "slack changed signature", "slack changed timestamp header",
        "slack old timestamp", "slack no signature", "twilio changed param",
        "twilio changed signature", "standard changed body", "standard changed id",
        "standard future timestamp",
    ],
)  # fmt: skip
def test_tampered_requests_fail(
    auth: Dict[str, Any], request_: IncomingRequest, now: Optional[float], reason: str
) -> None:
    with pytest.raises(AuthFailed, match=reason):
        check(auth, request_, now=now)


@pytest.mark.parametrize(
    "auth, request_, now",
    [
        (SLACK_AUTH, slack_request(), SLACK_NOW),
        (TWILIO_AUTH, twilio_request(), None),
        (STANDARD_AUTH, standard_request(), STANDARD_NOW),
    ],
    ids=["slack", "twilio", "standard webhooks"],
)
def test_wrong_secret_fails(
    monkeypatch: pytest.MonkeyPatch, auth: Dict[str, Any], request_: IncomingRequest, now: Any
) -> None:
    monkeypatch.setenv(auth["secret_env"], "whsec_" + base64.b64encode(b"other").decode())
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(auth, request_, now=now)


def test_twilio_signs_the_configured_url_never_the_request_url() -> None:
    """The request's URL comes from its Host header, which the client chooses: a signature
    Twilio made for one URL must not pass because a request claims that URL."""
    other = "https://attacker.example/myapp.php?foo=1&bar=2"
    # base64 HMAC-SHA1 with the example's auth token "12345" over `other` + the sorted params.
    signed_for_other = "mFDhBgaPCbyajhROBgv7wcbjkXM="
    # The configured URL is signed, whatever URL the request was sent to.
    request = IncomingRequest(
        twilio_body(TWILIO["params"]),
        {"x-twilio-signature": TWILIO["expected_signature"]},
        url=other,
    )
    check(TWILIO_AUTH, request)
    # A signature over the request's own URL does not pass.
    forged = IncomingRequest(
        twilio_body(TWILIO["params"]), {"x-twilio-signature": signed_for_other}, url=other
    )
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(TWILIO_AUTH, forged)


def test_twilio_without_its_public_url_refuses_every_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TWILIO_WEBHOOK_URL")
    scheme = build_auth(TWILIO_AUTH)
    assert scheme.env_names() == ["TWILIO_AUTH_TOKEN", "TWILIO_WEBHOOK_URL"]
    assert scheme.problems() == ["environment variable TWILIO_WEBHOOK_URL is not set"]
    request = IncomingRequest(
        twilio_body(TWILIO["params"]),
        {"x-twilio-signature": TWILIO["expected_signature"]},
        url=TWILIO["url"],  # the request's own URL is the right one, and is still not used
    )
    with pytest.raises(AuthFailed, match="TWILIO_WEBHOOK_URL is not set"):
        check(TWILIO_AUTH, request)


def test_url_signatures_need_public_url_env(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    section = {key: value for key, value in TWILIO_AUTH.items() if key != "public_url_env"}
    with pytest.raises(AuthConfigError, match="'public_url_env' is a dependency of 'signed'"):
        build_auth(section)
    mapping = tmp_path / "twilio.yml"
    mapping.write_text(
        "name: twilio\n"
        "auth:\n"
        "  type: hmac\n"
        "  secret_env: TWILIO_AUTH_TOKEN\n"
        "  header: X-Twilio-Signature\n"
        "  signed: '{url}{form_params}'\n"
        "request: {format: form, sender: From, text: Body}\n"
    )
    assert main(["validate", str(mapping)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{mapping}:2:1: twilio.auth: 'public_url_env' is a dependency of 'signed' (signed uses "
        "{url}: public_url_env must name the variable holding the URL the platform posts to; "
        "the request's own URL is never signed, as its host is whatever the client sends)",
        "1 file: 0 valid, 1 invalid, 1 findings",
    ]


@pytest.mark.parametrize("where", ["header", "query", "field"])
def test_static_token(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    auth = dict(
        type="token", secret_env="TOKEN", **{where: "X-Token" if where == "header" else "token"}
    )
    good = {"header": {"X-Token": "s3cret"}, "query": {}, "field": {}}[where]
    request = IncomingRequest.from_parts(b"", good, {"token": "s3cret"} if where == "query" else {})
    check(auth, request, {"token": "s3cret"} if where == "field" else None)
    bad = IncomingRequest.from_parts(b"", {"X-Token": "s3creT"}, {"token": "nope"})
    with pytest.raises(AuthFailed):
        check(auth, bad, {"token": "s3cret!"})


def test_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "rasa")
    monkeypatch.setenv("PASSWORD", "pw")
    auth = dict(type="basic", username_env="USER", password_env="PASSWORD")
    token = base64.b64encode(b"rasa:pw").decode()
    check(auth, IncomingRequest.from_parts(b"", {"Authorization": f"Basic {token}"}))
    with pytest.raises(AuthFailed):
        wrong = base64.b64encode(b"rasa:px").decode()
        check(auth, IncomingRequest.from_parts(b"", {"Authorization": f"Basic {wrong}"}))
