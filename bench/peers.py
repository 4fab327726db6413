"""Peer routes: Rasa's own connectors beside generic channels with the shipped mappings.

For Telegram, Slack, Twilio, Messenger, Mattermost and Rocket.Chat, ``bench/server.py``
serves Rasa's connector under ``/rasa/<name>/webhook`` and the generic channel with
``mappings/<platform>.yml`` under ``/webhooks/peer_<platform>/webhook``. Replies that go
through a platform API go to the stand-in API (``bench/standin_api.py``), Rasa's under
``/rasa/<platform>/…`` and the generic channels' under ``/generic/<platform>/…``, so that the
stand-in counts each route's deliveries apart.

Rasa's connectors are pointed at the stand-in by their own configuration where they take a
URL (Mattermost ``url``, Rocket.Chat ``server_url``). Where the platform URL is fixed in the
client, a subclass marked BENCHMARK ONLY below sets that one URL on the same client and
changes nothing else. ``TelegramInput`` fails as shipped (every update answers 500,
``RuntimeError: Event loop is closed``); ``FixedTelegramInput`` is the smallest fix that
lets it be measured, and ``ShippedTelegramInput`` (URL only) is served too, so that
``bench/run.py`` shows the failure.

Each route's requests are built by a wrk Lua script (``lua()``) from the platform's documented
webhook payload (``tests/payloads/<platform>/``, or the mapping's test case), with a new
message id per request and 1,000 senders, and signed per request as the platform signs:
HMAC through LuaJIT's FFI with the libcrypto that wrk is linked with, Slack's timestamp being
the current second.
"""

import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional

# The secrets of the benchmark, for the generic channels (environment) and Rasa's connectors
# (their configuration) alike.
SECRETS = {
    "TELEGRAM_BOT_TOKEN": "123456:bench",
    "TELEGRAM_SECRET_TOKEN": "bench-secret-token",
    "SLACK_BOT_TOKEN": "xoxb-bench-token",
    "SLACK_SIGNING_SECRET": "bench-slack-signing-secret",
    "TWILIO_AUTH_TOKEN": "bench-twilio-auth-token",
    "TWILIO_WEBHOOK_URL": "https://example.com/webhooks/twilio/webhook",
    "MESSENGER_PAGE_ACCESS_TOKEN": "bench-page-access-token",
    "MESSENGER_VERIFY_TOKEN": "bench-verify-token",
    "MESSENGER_APP_SECRET": "bench-app-secret",
    "MATTERMOST_TOKEN": "zmigewsanbbsdf59xnmduzypjc",
    "ROCKETCHAT_TOKEN": "bench-rocketchat-token",
}
TELEGRAM_BOT_USERNAME = "bench_bot"  # what the stand-in's getMe answers
TWILIO_ACCOUNT_SID = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
SLACK_CHANNEL = "C123ABC456"  # the payload's channel: SlackInput answers only its own


def environment(api_url: str) -> Dict[str, str]:
    """The generic channels' environment: secrets, and the API bases at the stand-in."""
    return {
        **SECRETS,
        "TELEGRAM_API_URL": f"{api_url}/generic/telegram",
        "SLACK_API_URL": f"{api_url}/generic/slack",
        "MESSENGER_API_URL": f"{api_url}/generic/messenger",
    }


# Rasa's connectors ---------------------------------------------------------------------------


def rasa_connectors(api_url: str) -> List[Any]:
    """Rasa's own connectors for the six platforms as ``credentials.yml`` would configure
    them (``from_credentials``), replying to the stand-in API."""
    import rasa_pointed as pointed
    from rasa.core.channels.facebook import FacebookInput
    from rasa.core.channels.mattermost import MattermostInput
    from rasa.core.channels.rocketchat import RocketChatInput

    pointed.point_messenger_client(f"{api_url}/rasa/messenger")
    return [
        pointed.configured(pointed.FixedTelegramInput, TELEGRAM_CREDENTIALS,
                           f"{api_url}/rasa/telegram"),
        pointed.configured(pointed.PointedSlackInput, {
            "slack_token": SECRETS["SLACK_BOT_TOKEN"], "slack_channel": SLACK_CHANNEL,
            "slack_signing_secret": SECRETS["SLACK_SIGNING_SECRET"]}, f"{api_url}/rasa/slack/"),
        pointed.configured(pointed.PointedTwilioInput, {
            "account_sid": TWILIO_ACCOUNT_SID, "auth_token": SECRETS["TWILIO_AUTH_TOKEN"],
            "twilio_number": "+15558675310"}, f"{api_url}/rasa/twilio"),
        FacebookInput.from_credentials({
            "verify": SECRETS["MESSENGER_VERIFY_TOKEN"], "secret": SECRETS["MESSENGER_APP_SECRET"],
            "page-access-token": SECRETS["MESSENGER_PAGE_ACCESS_TOKEN"]}),
        # By configuration alone: both take the server's URL.
        MattermostInput.from_credentials({
            "url": f"{api_url}/rasa/mattermost/api/v4", "token": "bench-mattermost-bot-token",
            "webhook_url": "https://example.com/webhooks/mattermost/webhook"}),
        RocketChatInput.from_credentials({
            "user": "bench_bot", "password": "bench-password",
            "server_url": f"{api_url}/rasa/rocketchat"}),
    ]  # fmt: skip


TELEGRAM_CREDENTIALS = {
    "access_token": SECRETS["TELEGRAM_BOT_TOKEN"],
    "verify": TELEGRAM_BOT_USERNAME,
    "webhook_url": "https://example.com/webhooks/telegram/webhook",
}


def shipped_telegram(api_url: str) -> Any:
    """``TelegramInput`` as shipped, only its Bot API URL at the stand-in."""
    import rasa_pointed as pointed

    return pointed.configured(
        pointed.ShippedTelegramInput, TELEGRAM_CREDENTIALS, f"{api_url}/rasa-shipped/telegram"
    )


PLATFORMS = ["telegram", "slack", "twilio", "messenger", "mattermost", "rocketchat"]


def generic_channels() -> List[Any]:
    """The generic channels with the shipped mappings (only the name changed)."""
    from generic_connector.channel import GenericChannel
    from generic_connector.config import load_channel

    return [
        GenericChannel(load_channel({"mapping": f"mappings/{name}.yml", "name": f"peer_{name}"}))
        for name in PLATFORMS
    ]


# Requests: wrk Lua -----------------------------------------------------------------------------

LUA_PRELUDE = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha1(void);
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
int EVP_EncodeBlock(unsigned char *t, const unsigned char *f, int n);
]]
local C = ffi.C  -- wrk is linked with libcrypto
local SHA1, SHA256 = C.EVP_sha1(), C.EVP_sha256()
local md, md_len, b64 = ffi.new("unsigned char[64]"), ffi.new("unsigned int[1]"),
  ffi.new("unsigned char[128]")
local HEX = {}
for i = 0, 255 do HEX[string.char(i)] = string.format("%02x", i) end
local function hmac(algorithm, key, data)
  C.HMAC(algorithm, key, #key, data, #data, md, md_len)
  return ffi.string(md, md_len[0])
end
local function hex(raw) return (raw:gsub(".", HEX)) end
local function base64(raw)
  return ffi.string(b64, C.EVP_EncodeBlock(b64, raw, #raw))
end
local function form_encode(value)
  return (value:gsub("[^%w%-%._~ ]", function(c) return string.format("%%%02X", c:byte()) end)
    :gsub(" ", "+"))
end
counter = START
request = function()
  counter = counter + 1
  local n, s = counter, counter % 1000
  local headers, body
BUILD
  return wrk.format("POST", nil, headers, body)
end
"""


def lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


TELEGRAM_BODY = (
    '{"update_id":%d,"message":{"date":1441645532,"chat":{"last_name":"Test Lastname",'
    '"id":%d,"type":"private","first_name":"Test Firstname","username":"Testusername"},'
    '"message_id":1365,"from":{"last_name":"Test Lastname","id":1111111,'
    '"first_name":"Test Firstname","username":"Testusername"},"text":"/start"}}'
)
TELEGRAM = f"""
  body = string.format({lua_string(TELEGRAM_BODY)}, n, s)
  headers = {{["Content-Type"] = "application/json",
             ["X-Telegram-Bot-Api-Secret-Token"] = {lua_string(SECRETS["TELEGRAM_SECRET_TOKEN"])}}}
"""

SLACK_BODY = (
    '{"token":"one-long-verification-token","team_id":"T123ABC456","api_app_id":"A123ABC456",'
    '"event":{"type":"message","channel":"C123ABC456","user":"U%d",'
    '"text":"Live long and prospect.","ts":"1355517523.000005","event_ts":"1355517523.000005",'
    '"channel_type":"channel"},"type":"event_callback","authorizations":[{"team_id":"T123ABC456",'
    '"user_id":"U123ABC456","is_bot":false,"is_enterprise_install":false}],'
    '"event_id":"Ev%d","event_time":1355517523}'
)
SLACK = f"""
  body = string.format({lua_string(SLACK_BODY)}, s, n)
  local stamp = tostring(os.time())
  local signature = hex(hmac(SHA256, {lua_string(SECRETS["SLACK_SIGNING_SECRET"])},
                             "v0:" .. stamp .. ":" .. body))
  headers = {{["Content-Type"] = "application/json", ["X-Slack-Request-Timestamp"] = stamp,
             ["X-Slack-Signature"] = "v0=" .. signature}}
"""

# tests/payloads/twilio/sms.form: (name, value), %d for the message id and the sender.
TWILIO_FIELDS = [
    ("MessageSid", "SM%032d"), ("SmsSid", "SM%032d"), ("SmsMessageSid", "SM%032d"),
    ("AccountSid", TWILIO_ACCOUNT_SID),
    ("MessagingServiceSid", "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    ("From", "+1401712%04d"), ("To", "+15558675310"),
    ("Body", "Ahoy! Let's build something amazing."),
    ("NumMedia", "0"), ("NumSegments", "1"), ("FromCity", "SAN FRANCISCO"), ("FromState", "CA"),
    ("FromZip", "94103"), ("FromCountry", "US"), ("ToCity", "SAUSALITO"), ("ToState", "CA"),
    ("ToZip", "94965"), ("ToCountry", "US"),
]  # fmt: skip


def _twilio() -> str:
    values = [
        f"string.format({lua_string(v)}, s)" if v.startswith("+1401712") else
        f"string.format({lua_string(v)}, n)" if "%" in v else lua_string(v)
        for _, v in TWILIO_FIELDS
    ]  # fmt: skip
    pairs = ", ".join(f"{{{lua_string(k)}, {v}}}" for (k, _), v in zip(TWILIO_FIELDS, values))
    return f"""
  local fields = {{{pairs}}}
  local parts, sorted = {{}}, {{}}
  for i, field in ipairs(fields) do
    parts[i] = field[1] .. "=" .. form_encode(field[2])
    sorted[i] = field
  end
  table.sort(sorted, function(a, b) return a[1] < b[1] end)
  local signed = {{{lua_string(SECRETS["TWILIO_WEBHOOK_URL"])}}}
  for i, field in ipairs(sorted) do signed[i + 1] = field[1] .. field[2] end
  body = table.concat(parts, "&")
  headers = {{["Content-Type"] = "application/x-www-form-urlencoded",
             ["X-Twilio-Signature"] = base64(hmac(SHA1, {lua_string(SECRETS["TWILIO_AUTH_TOKEN"])},
                                                  table.concat(signed)))}}
"""


# tests/payloads/messenger/message.json in the page envelope (as the mapping's test cases).
MESSENGER_BODY = (
    '{"object":"page","entry":[{"id":"<PAGE_ID>","time":1458692752478,"messaging":[{'
    '"sender":{"id":"%d"},"recipient":{"id":"<PAGE_ID>"},"timestamp":1458692752478,'
    '"message":{"mid":"m_%d","text":"hello, world!",'
    '"quick_reply":{"payload":"<DEVELOPER_DEFINED_PAYLOAD>"}}}]}]}'
)
MESSENGER = f"""
  body = string.format({lua_string(MESSENGER_BODY)}, s, n)
  local secret = {lua_string(SECRETS["MESSENGER_APP_SECRET"])}
  headers = {{["Content-Type"] = "application/json",
             ["X-Hub-Signature"] = "sha1=" .. hex(hmac(SHA1, secret, body)),
             ["X-Hub-Signature-256"] = "sha256=" .. hex(hmac(SHA256, secret, body))}}
"""

# tests/payloads/mattermost/outgoing_webhook.form (the webhook's default content type) for
# the generic channel, outgoing_webhook.json (the content type Rasa's connector reads).
MATTERMOST_FORM = (
    "channel_id=hawos4dqtby53pd64o4a4cmeoo&channel_name=town-square&team_domain=someteam"
    "&team_id=kwoknj9nwpypzgzy78wkw516qe&post_id=p%d&text=some+text+here&timestamp=1445532266"
    f"&token={SECRETS['MATTERMOST_TOKEN']}&trigger_word=some&user_id=u%d&user_name=somename"
)
MATTERMOST_JSON = (
    '{"channel_id":"hawos4dqtby53pd64o4a4cmeoo","channel_name":"town-square",'
    '"team_domain":"someteam","team_id":"kwoknj9nwpypzgzy78wkw516qe","post_id":"p%d",'
    '"text":"some text here","timestamp":"1445532266",'
    f'"token":"{SECRETS["MATTERMOST_TOKEN"]}","trigger_word":"some","user_id":"u%d",'
    '"user_name":"somename"}'
)
MATTERMOST_FORM_LUA = f"""
  body = string.format({lua_string(MATTERMOST_FORM)}, n, s)
  headers = {{["Content-Type"] = "application/x-www-form-urlencoded"}}
"""
MATTERMOST_JSON_LUA = f"""
  body = string.format({lua_string(MATTERMOST_JSON)}, n, s)
  headers = {{["Content-Type"] = "application/json"}}
"""

# The fields Rocket.Chat documents for outgoing webhooks (the mapping's test case).
ROCKETCHAT_BODY = (
    f'{{"token":"{SECRETS["ROCKETCHAT_TOKEN"]}","channel_id":"c%d","channel_name":"general",'
    '"timestamp":"2024-01-01T00:00:00.000Z","user_id":"u%d","user_name":"user%d",'
    '"text":"hello %d","trigger_word":"@bench_bot"}'
)
ROCKETCHAT = f"""
  body = string.format({lua_string(ROCKETCHAT_BODY)}, s, s, s, n)
  headers = {{["Content-Type"] = "application/json"}}
"""


def lua(build: str, start: int) -> str:
    """A wrk script: ``build`` sets ``body`` and ``headers`` from ``n`` (a new counter, from
    ``start``) and ``s`` (the sender number, ``n % 1000``)."""
    return LUA_PRELUDE.replace("START", str(start)).replace("BUILD", build)


class Peer(NamedTuple):
    platform: str
    side: str  # "Rasa" or "generic"
    path: str
    build: str  # Lua
    delivered: Optional[str]  # the stand-in path counted as replies; None: in the answer
    short: str  # the work done, in a few words
    work: str

    @property
    def label(self) -> str:
        return f"{self.platform}, {self.side}"


TOKEN = SECRETS["TELEGRAM_BOT_TOKEN"]
PEERS: List[Peer] = [
    Peer("Telegram", "Rasa", "/rasa/telegram/webhook", TELEGRAM,
         f"/rasa/telegram/bot{TOKEN}/sendMessage", "getMe + sendMessage, awaited",
         "TelegramInput with the loop fix: aiogram's Update, a getMe call per update (its "
         "`verify` is compared with the bot's username), sendMessage awaited before the "
         "answer, pooled aiohttp; no secret-token check"),
    Peer("Telegram", "generic", "/webhooks/peer_telegram/webhook", TELEGRAM,
         f"/generic/telegram/bot{TOKEN}/sendMessage", "sendMessage after the answer",
         "telegram.yml: secret-token check, update ids remembered, sendMessage after the "
         "answer, pooled aiohttp"),
    Peer("Slack", "Rasa", "/rasa/slack/webhook", SLACK, "/rasa/slack/chat.postMessage",
         "postMessage, new session each",
         "SlackInput: signature and 5-minute window checked, answered at once, a task per "
         "message; chat.postMessage through a new AsyncWebClient and aiohttp session "
         "(a new connection) per reply"),
    Peer("Slack", "generic", "/webhooks/peer_slack/webhook", SLACK,
         "/generic/slack/chat.postMessage", "postMessage after the answer",
         "slack.yml: signature and 5-minute window checked, event ids remembered, "
         "chat.postMessage after the answer, pooled aiohttp"),
    Peer("Twilio", "Rasa", "/rasa/twilio/webhook", _twilio(),
         f"/rasa/twilio/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json",
         "Messages API, blocking",
         "TwilioInput: no signature check; the reply through twilio's REST client (requests, "
         "blocking the event loop; a new client, session and connection per webhook), "
         "answered 204"),
    Peer("Twilio", "generic", "/webhooks/peer_twilio/webhook", _twilio(), None,
         "TwiML in the answer",
         "twilio.yml: X-Twilio-Signature (HMAC-SHA1 over the URL and the sorted form) "
         "checked, message ids remembered; the reply as TwiML in the answer"),
    Peer("Messenger", "Rasa", "/rasa/facebook/webhook", MESSENGER,
         "/rasa/messenger/me/messages", "4 Send API calls, blocking",
         "FacebookInput: X-Hub-Signature (SHA-1) checked; fbmessenger (requests, blocking; a "
         "new session per webhook) sends mark_seen, typing_on, the reply and typing_off"),
    Peer("Messenger", "generic", "/webhooks/peer_messenger/webhook", MESSENGER,
         "/generic/messenger/me/messages", "Send API after the answer",
         "messenger.yml: X-Hub-Signature-256 checked, the batch's events, message ids "
         "remembered; the Send API after the answer, pooled aiohttp"),
    Peer("Mattermost", "Rasa", "/rasa/mattermost/webhook", MATTERMOST_JSON_LUA,
         "/rasa/mattermost/api/v4/posts", "POST /posts, blocking",
         "MattermostInput: JSON body (it reads no form), no token check; POST /api/v4/posts "
         "per reply with requests (blocking, a new connection each)"),
    Peer("Mattermost", "generic", "/webhooks/peer_mattermost/webhook", MATTERMOST_FORM_LUA,
         None, '{"text"} in the answer',
         'mattermost.yml: form body, token checked, post ids remembered; {"text": ...} in '
         "the answer, which Mattermost posts"),
    Peer("Rocket.Chat", "Rasa", "/rasa/rocketchat/webhook", ROCKETCHAT,
         "/rasa/rocketchat/api/v1/chat.postMessage", "login + postMessage, blocking",
         "RocketChatInput: no token check; per message a new client that logs in "
         "(POST /api/v1/login), then chat.postMessage, with requests (blocking)"),
    Peer("Rocket.Chat", "generic", "/webhooks/peer_rocketchat/webhook", ROCKETCHAT, None,
         '{"text"} in the answer',
         'rocketchat.yml: token checked; {"text": ...} in the answer, which Rocket.Chat posts'),
]  # fmt: skip
SHIPPED_TELEGRAM = Peer(
    "Telegram", "Rasa as shipped", "/rasa-shipped/telegram/webhook", TELEGRAM,
    f"/rasa-shipped/telegram/bot{TOKEN}/sendMessage", "as shipped",
    "TelegramInput as shipped, its Bot API URL at the stand-in",
)  # fmt: skip


def register_peers(server: Any, api_url: str, on_new_message: Callable) -> None:
    """Rasa's connectors under /rasa/, the generic peers under /webhooks/."""
    from rasa.core.channels.channel import register

    shipped = shipped_telegram(api_url)
    blueprint = shipped.blueprint(on_new_message)
    blueprint.name = "telegram_webhook_as_shipped"  # beside the fixed one
    server.blueprint(blueprint, url_prefix="/rasa-shipped/telegram")
    register(rasa_connectors(api_url), server, route="/rasa/")
    register(generic_channels(), server, route="/webhooks/")


def set_environment(api_url: str) -> None:
    os.environ.update(environment(api_url))
