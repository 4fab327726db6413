"""Shared fixtures: the demo assistant trained once per run, and real ``rasa run`` servers.

The servers are started together when the first end-to-end test asks for one, so that
their start-up (about 15 s each) overlaps.
"""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from hypothesis import settings

from tests.platform_api import PlatformAPI
from tests.rasa_process import ROOT, RasaServer, free_port, train
from tests.signing import CHAT_ISSUER, PROTOCOL_SECRETS, WEBHOOK_SECRETS, chat_jwks

# Hypothesis: a tenth of the examples for the inner loop, the full count in CI (CI=true). The
# tests that ask for more ask for a multiple of the profile's count.
settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Fixtures that start a real redis-server: the tests that use one are the `redis` tier.
REDIS_FIXTURES = {"redis_server", "redis_url", "redis_later"}


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Every test in one tier: `e2e` (real rasa processes, marked by its module, and other slow
    processes, marked by the test), `redis` (a real redis-server), else `unit` (`make
    test-fast`)."""
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("redis"):
            continue
        if REDIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)
        else:
            item.add_marker(pytest.mark.unit)


# Channels served by the main test server, beside Rasa's own REST channel.
MAIN_CREDENTIALS = """
rest:

generic_connector.GenericChannel:
  mapping: mappings/myio.yml

generic_connector.channels.restlike:
  mapping: mappings/rest.yml
  name: restlike

generic_connector.channels.shop:
  name: shop
  request:
    sender: data.customer.id
    text: data.message.body
    message_id: data.message.id
    metadata: "{customer: data.customer.name, order: data.order.id, tags: data.order.tags}"
  response:
    body: "{replies: messages[].text, customer: request.data.customer.name}"

# Small limits, to see them applied by the real server.
generic_connector.channels.tight:
  name: tight
  request: {sender: sender, text: message}
  limits: {max_body: 1000, read_timeout: 2, max_concurrent: 3}

# An answer template that fails on some requests (split by an empty separator).
generic_connector.channels.fragile:
  name: fragile
  request: {sender: sender, text: message}
  response: {body: "split(request.message, request.separator)"}

# De-duplication in a Redis that is not there: readiness and webhooks answer 503.
generic_connector.channels.storeless:
  name: storeless
  request: {sender: sender, text: message, message_id: id}
  store: {type: redis, url_env: DEAD_REDIS_URL}
"""

# Every shipped platform mapping, as a user would configure them.
PLATFORMS = [
    "telegram",
    "slack",
    "twilio",
    "whatsapp",
    "messenger",
    "mattermost",
    "rocketchat",
    "teams",
    "line",
    "viber",
    "zulip",
    "standard-webhooks",
    "chatwoot",
    "discord",
    "google-chat",
    "vonage",
    "webex",
    "telnyx",
    "bandwidth",
    "crisp",
    "signal-cli-rest-api",
    "line-works",
    "google-rbm",
    "ringcentral",
]
PLATFORM_CREDENTIALS = (
    "".join(
        f"generic_connector.channels.{name}:\n  mapping: mappings/{name}.yml\n"
        for name in PLATFORMS
    )
    + """
# Messages on a PUT route with a path parameter, a bearer token refused with the platform's
# own 403 (tests/test_protocols.py).
generic_connector.channels.transactions:
  name: transactions
  routes:
    - {method: PUT, path: "/transactions/{txn_id}"}
  auth:
    type: token
    secret_env: TRANSACTIONS_TOKEN
    header: Authorization
    prefix: "Bearer "
    refusal: {status: 403, body: '`{"errcode": "M_FORBIDDEN", "error": "bad token"}`'}
  request:
    events: events
    sender: sender
    text: content.body
    message_id: event_id
    metadata: "{txn: path('txn_id')}"
  response: {body: "{replies: messages[].text}"}

# XML signed by SHA-1 over the sorted token, timestamp and nonce in the query (WeChat's
# plaintext mode), answered in XML.
generic_connector.channels.wechat:
  name: wechat
  request:
    format: xml
    sender: xml.FromUserName
    text: xml.Content
    message_id: xml.MsgId
  auth:
    type: expression
    expected: "sha1(join('', sort([env('WECHAT_TOKEN'), query('timestamp'), query('nonce')])))"
    given: query('signature')
    timestamp: {value: "query('timestamp')", format: unix}
    refusal: {status: 403, body: "'invalid signature'", content_type: text/plain}
  response:
    format: xml
    body: >-
      {xml: {ToUserName: request.xml.FromUserName, FromUserName: request.xml.ToUserName,
      MsgType: 'text', Content: messages[0].text}}

# HMAC-SHA256 over an RFC 3339 timestamp header and the body; a handshake answered with the
# HMAC of its challenge (Zoom's endpoint.url_validation).
generic_connector.channels.stamped:
  name: stamped
  request: {sender: payload.user, text: payload.text}
  auth:
    type: expression
    expected: >-
      hmac('sha256', env('STAMPED_SECRET'), join('.', [header('X-Timestamp'), raw_body()]),
      'hex')
    given: header('X-Signature')
    prefix: "v1="
    timestamp: {value: "header('X-Timestamp')", format: rfc3339, tolerance: 300}
  handshakes:
    - name: url validation
      when: "event == 'endpoint.url_validation'"
      response:
        body: >-
          {plainToken: request.payload.plainToken,
          encryptedToken: hmac('sha256', env('STAMPED_SECRET'), request.payload.plainToken,
          'hex')}

# A millisecond timestamp with the secret inside the signed string (Zalo-style).
generic_connector.channels.millis:
  name: millis
  request: {sender: sender.id, text: message.text}
  auth:
    type: expression
    expected: >-
      sha256(join('', [env('MILLIS_APP_ID'), raw_body(), header('X-Timestamp'),
      env('MILLIS_SECRET')]))
    given: header('X-Event-Signature')
    prefix: "mac="
    timestamp: {value: "header('X-Timestamp')", format: unix_ms}

# An RSA (PKCS#1 v1.5, SHA-256) signature of the body with the account's public key.
generic_connector.channels.rsasigned:
  name: rsasigned
  request: {sender: from, text: text}
  auth: {type: rsa, public_key_env: RSASIGNED_PUBLIC_KEY, given: header('X-Signature')}

# An image sent as an upload, then a message with the upload's id; a 2xx answer whose
# is_sent is false is retried (tests/test_protocols.py).
generic_connector.channels.uploader:
  name: uploader
  request: {sender: from, text: text, message_id: id}
  response: {body: "`{}`"}
  outbound:
    allow_hosts: [127.0.0.1]
    retries: 2
    backoff: 0.1
    max_backoff: 0.2
    defaults:
      url: join('', [env('UPLOADER_API_URL'), '/messages'])
    text:
      body: "{to: recipient, text: message.text}"
    image:
      steps:
        - name: upload
          url: join('', [env('UPLOADER_API_URL'), '/media'])
          body: "{url: message.image}"
          success: id != null
      body: "{to: recipient, media_id: steps.upload.id}"
      success: is_sent

# Platform limits: the demo's greeting here is 10,000 characters with a button, sent in parts
# of at most 1,000, four requests a second at most (tests/test_limits_e2e.py).
generic_connector.channels.longreply:
  name: longreply
  request: {sender: from, text: text, message_id: id}
  response: {body: "`{}`"}
  outbound:
    allow_hosts: [127.0.0.1]
    retries: 2
    backoff: 0.1
    max_text: 1000
    rate: {per_second: 4}
    defaults:
      url: join('', [env('LONGREPLY_API_URL'), '/messages'])
    text:
      body: "{to: recipient, text: message.text}"
    buttons:
      body: "{to: recipient, text: message.text, buttons: message.buttons[].title}"

# Replies to a URL the request names (like Slack's response_url), only on allowed hosts.
generic_connector.channels.hook:
  name: hook
  request: {sender: user, text: text}
  outbound:
    allow_hosts: [127.0.0.1]
    wait: true
    text: {url: event.response_url, body: "{text: message.text}"}
"""
)
# A platform that shows text only: buttons go out as numbered text, and an answer naming one
# reaches Rasa as its payload (tests/test_fallback_e2e.py).
PLATFORM_CREDENTIALS += """
generic_connector.channels.textonly:
  name: textonly
  request: {sender: from, text: text, message_id: id}
  response: {body: "`{}`"}
  outbound:
    allow_hosts: [127.0.0.1]
    renders: [text]
    text:
      url: join('', [env('TEXTONLY_API_URL'), '/messages'])
      body: "{to: recipient, text: message.text}"
"""
# The main server's /metrics and readiness details are for this bearer token only.
OPS_TOKEN = "ops-token-for-the-tests"
OPS = {"GENERIC_CONNECTOR_OPS_TOKEN": OPS_TOKEN}
VERIFY_TOKENS = {"WHATSAPP_VERIFY_TOKEN": "meatyhamhock", "MESSENGER_VERIFY_TOKEN": "meatyhamhock"}
API_TOKENS = {
    "TELEGRAM_BOT_TOKEN": "123456:telegram-test-token",
    "SLACK_BOT_TOKEN": "xoxb-slack-test-token",
    "WHATSAPP_ACCESS_TOKEN": "whatsapp-test-token",
    "WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
    "MESSENGER_PAGE_ACCESS_TOKEN": "messenger-test-token",
    "LINE_CHANNEL_ACCESS_TOKEN": "line-test-token",
    "VIBER_BOT_NAME": "Viber Bot",
    "CHATWOOT_BOT_TOKEN": "chatwoot-test-token",
    "CHATWOOT_ACCOUNT_ID": "42",
    "GOOGLE_CHAT_PROJECT_NUMBER": "1234567890",
    "VONAGE_API_KEY": "a1b2c3d",
    "VONAGE_API_SECRET": "vonage-test-secret",
    "WEBEX_BOT_TOKEN": "webex-test-token",
    "WEBEX_BOT_EMAIL": "bot@webex.bot",
    "TELNYX_API_KEY": "telnyx-test-key",
    "BANDWIDTH_CALLBACK_USERNAME": "bw-callback-user",
    "BANDWIDTH_CALLBACK_PASSWORD": "bw-callback-pass",
    "BANDWIDTH_CLIENT_ID": "bw-client-id",
    "BANDWIDTH_CLIENT_SECRET": "bw-client-secret",
    "BANDWIDTH_ACCOUNT_ID": "9900000",
    "CRISP_HOOK_SECRET": "crisp-hook-secret",
    "CRISP_TOKEN_IDENTIFIER": "crisp-identifier",
    "CRISP_TOKEN_KEY": "crisp-key",
    "SIGNAL_NUMBER": "+431212131491291",
    "LINE_WORKS_BOT_SECRET": "line-works-test-bot-secret",
    "LINE_WORKS_BOT_ID": "123",
    "LINE_WORKS_CLIENT_ID": "test-client-id",
    "LINE_WORKS_CLIENT_SECRET": "test-client-secret",
    "LINE_WORKS_SERVICE_ACCOUNT": "test.serviceaccount@example.com",
    "LINE_WORKS_PRIVATE_KEY": "not-used-by-the-test",
    "RBM_CLIENT_TOKEN": "SJENCPGJESMGUFPY",
    "RBM_AGENT_ID": "welcome-bot@rbm.goog",
    "RBM_SERVICE_ACCOUNT_EMAIL": "rbm-test@example.iam.gserviceaccount.com",
    "RBM_PRIVATE_KEY": "not-used-by-the-test",
    "MESSAGEBIRD_SIGNING_KEY": "messagebird-test-signing-key-0123456789",
    "MESSAGEBIRD_WEBHOOK_URL": "https://example.com/webhooks/messagebird/webhook",
    "MESSAGEBIRD_ACCESS_KEY": "messagebird-test-access-key",
    # RingCentral: the Verification-Token of the documented validation request, and the bot
    # extension id of the bot walkthrough's events.
    "RINGCENTRAL_VERIFICATION_TOKEN": "xzbcnzbcczxcnzxsjfhkjkfhsdkssfsfsfs",
    "RINGCENTRAL_BOT_ID": "707525005",
    "RINGCENTRAL_BOT_TOKEN": "ringcentral-test-bot-token",
    # WeCom: the token, EncodingAESKey and corp id of the documented example (90968); the
    # mapping's test cases (signed in 2014) are not replayed by a server (not in PLATFORMS).
    "WECOM_TOKEN": "QDG6eK",
    "WECOM_AES_KEY": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    "WECOM_CORP_ID": "wx5823bf96d3bd56c7",
    "WECOM_CORP_SECRET": "wecom-test-corp-secret",
    "WECOM_AGENT_ID": "218",
}


def api_urls(api: PlatformAPI) -> Dict[str, str]:
    """Every platform's API base pointed at the local stand-in."""
    return {
        "TELEGRAM_API_URL": f"{api.url}/telegram",
        "SLACK_API_URL": f"{api.url}/slack",
        "WHATSAPP_API_URL": f"{api.url}/whatsapp",
        "MESSENGER_API_URL": f"{api.url}/messenger",
        "LINE_API_URL": f"{api.url}/line",
        "VIBER_API_URL": f"{api.url}/viber",
        "CHATWOOT_URL": f"{api.url}/chatwoot",
        "VONAGE_API_URL": f"{api.url}/vonage",
        "WEBEX_API_URL": f"{api.url}/webex",
        "TELNYX_API_URL": f"{api.url}/telnyx",
        "BANDWIDTH_API_URL": f"{api.url}/bandwidth",
        "BANDWIDTH_TOKEN_URL": f"{api.url}/bandwidth/oauth2/token",
        "CRISP_API_URL": f"{api.url}/crisp",
        "SIGNAL_CLI_REST_API_URL": f"{api.url}/signal",
        "LINE_WORKS_API_URL": f"{api.url}/line-works",
        "LINE_WORKS_AUTH_URL": f"{api.url}/line-works/oauth2",
        "RBM_API_URL": f"{api.url}/rbm",
        "RBM_TOKEN_URL": f"{api.url}/rbm/token",
        "RINGCENTRAL_API_URL": f"{api.url}/ringcentral",
        "UPLOADER_API_URL": f"{api.url}/uploader",
        "LONGREPLY_API_URL": f"{api.url}/longreply",
        "TEXTONLY_API_URL": f"{api.url}/textonly",
    }


# A Redis URL where nothing listens, for the main credentials' storeless channel.
DEAD_REDIS = {"DEAD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

# A tracker store on disk, for a server that is killed and restarted.
SQLITE_ENDPOINTS = """
tracker_store:
  type: SQL
  dialect: sqlite
  db: {db}
"""

# A lock store that cannot be reached: every message makes Rasa raise. (Rasa falls back
# to memory when a tracker store fails, but not when the lock store does.)
BROKEN_ENDPOINTS = """
lock_store:
  type: redis
  url: 127.0.0.1
  port: {port}
  db: 0
"""


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def platform_api() -> Iterator[PlatformAPI]:
    """A real local HTTP server playing the platforms' APIs."""
    api = PlatformAPI()
    yield api
    api.close()


@pytest.fixture(scope="session")
def servers(
    model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    platform_api: PlatformAPI,
    jwks_server: "JsonDocuments",
    webex_messages: None,
) -> Iterator[Dict[str, RasaServer]]:
    folder = tmp_path_factory.mktemp("servers")
    (folder / "credentials.yml").write_text(MAIN_CREDENTIALS)
    (folder / "endpoints.yml").write_text(BROKEN_ENDPOINTS.format(port=free_port()))
    # allow_hosts entries are port-exact: the stand-in API's port.
    local = f"allow_hosts: ['127.0.0.1:{platform_api.port}']"
    (folder / "platforms.yml").write_text(
        PLATFORM_CREDENTIALS.replace("allow_hosts: [127.0.0.1]", local)
    )
    (folder / "sqlite.yml").write_text(SQLITE_ENDPOINTS.format(db=folder / "trackers.db"))
    started = {
        "main": RasaServer(
            model, folder / "credentials.yml", folder / "main.log", env={**DEAD_REDIS, **OPS}
        ),
        "failing": RasaServer(
            model,
            folder / "credentials.yml",
            folder / "failing.log",
            folder / "endpoints.yml",
            env=DEAD_REDIS,
        ),
        "platforms": RasaServer(
            model,
            folder / "platforms.yml",
            folder / "platforms.log",
            env={
                **VERIFY_TOKENS,
                **API_TOKENS,
                **WEBHOOK_SECRETS,
                **PROTOCOL_SECRETS,
                **api_urls(platform_api),
            },  # fmt: skip
        ),
    }
    started["durable"] = RasaServer(
        model,
        folder / "credentials.yml",
        folder / "durable.log",
        folder / "sqlite.yml",
        env=DEAD_REDIS,
    )
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="session")
def rasa(servers: Dict[str, RasaServer]) -> RasaServer:
    """The main server: the demo assistant with myio, restlike, shop and Rasa's rest."""
    return servers["main"].wait_ready()


@pytest.fixture(scope="session")
def failing_rasa(servers: Dict[str, RasaServer]) -> RasaServer:
    """The same channels over a lock store that is down."""
    return servers["failing"].wait_ready()


@pytest.fixture(scope="session")
def platforms_rasa(servers: Dict[str, RasaServer]) -> RasaServer:
    """The demo assistant serving every shipped platform mapping."""
    return servers["platforms"].wait_ready()


@pytest.fixture(scope="session")
def durable_rasa(servers: Dict[str, RasaServer]) -> RasaServer:
    """The main channels over a SQLite tracker store, for kill-and-restart tests."""
    return servers["durable"].wait_ready()


# --- A key server for JWT-protected channels, and the Webex messages the stand-in API returns.


class JsonDocuments:
    """A real HTTP server on 127.0.0.1 answering GET paths with fixed JSON documents.

    It binds its port when created (at import), so channel entries can name its URL before the
    servers start; the session fixture ``jwks_server`` serves it and closes it at the end.
    """

    def __init__(self, documents: Dict[str, Any]) -> None:
        self.documents = documents
        self.hits: List[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                server.hits.append(self.path)
                found = self.path in server.documents
                body = json.dumps(server.documents.get(self.path, {"error": "not found"}))
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


JWKS = JsonDocuments({"/jwks": chat_jwks()})

# The Google Chat mapping with its keys from the local key server instead of Google's
# certificates: the same channel, end to end, with tokens signed here.
PLATFORM_CREDENTIALS += f"""
generic_connector.channels.chatjwks:
  mapping: mappings/google-chat.yml
  name: google-chat-jwks
  auth:
    type: jwt
    algorithms: [RS256]
    jwks_url: {JWKS.url}/jwks
    issuer: {CHAT_ISSUER}
    audience_env: GOOGLE_CHAT_PROJECT_NUMBER
"""


@pytest.fixture(scope="session")
def jwks_server() -> Iterator[JsonDocuments]:
    """The key server of the ``google-chat-jwks`` channel, serving before the servers start."""
    JWKS.start()
    yield JWKS
    JWKS.close()


@pytest.fixture(scope="session")
def webex_messages(platform_api: PlatformAPI) -> None:
    """The stand-in API answers Webex's Get Message Details with the documented example."""
    answer = json.loads((ROOT / "tests/payloads/webex/get_message_response.json").read_text())
    platform_api.plan(
        lambda r: r.method == "GET" and r.path.startswith("/webex/v1/messages/"),
        [(200, {}, answer)] * 1000,
    )
