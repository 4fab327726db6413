"""Shared fixtures: the demo assistant trained once per run, and real ``rasa run`` servers.

The servers are started together when the first end-to-end test asks for one, so that
their start-up (about 15 s each) overlaps.
"""

from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.platform_api import PlatformAPI
from tests.rasa_process import RasaServer, free_port, train
from tests.signing import WEBHOOK_SECRETS

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
]
PLATFORM_CREDENTIALS = (
    "".join(
        f"generic_connector.channels.{name}:\n  mapping: mappings/{name}.yml\n"
        for name in PLATFORMS
    )
    + """
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
    }


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
    model: Path, tmp_path_factory: pytest.TempPathFactory, platform_api: PlatformAPI
) -> Iterator[Dict[str, RasaServer]]:
    folder = tmp_path_factory.mktemp("servers")
    (folder / "credentials.yml").write_text(MAIN_CREDENTIALS)
    (folder / "endpoints.yml").write_text(BROKEN_ENDPOINTS.format(port=free_port()))
    (folder / "platforms.yml").write_text(PLATFORM_CREDENTIALS)
    (folder / "sqlite.yml").write_text(SQLITE_ENDPOINTS.format(db=folder / "trackers.db"))
    started = {
        "main": RasaServer(model, folder / "credentials.yml", folder / "main.log"),
        "failing": RasaServer(
            model, folder / "credentials.yml", folder / "failing.log", folder / "endpoints.yml"
        ),
        "platforms": RasaServer(
            model,
            folder / "platforms.yml",
            folder / "platforms.log",
            env={**VERIFY_TOKENS, **API_TOKENS, **WEBHOOK_SECRETS, **api_urls(platform_api)},
        ),
    }
    started["durable"] = RasaServer(
        model, folder / "credentials.yml", folder / "durable.log", folder / "sqlite.yml"
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
