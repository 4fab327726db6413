"""Media in events: ``request.attachments`` become ``metadata.attachments``; ``download`` gets
their content with the platform's token into metadata, and the URL it used is kept nowhere."""

import asyncio
import base64
import json
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from generic_connector import stores
from generic_connector.cli.dryrun import simulate
from generic_connector.config import check_channel, load_channel
from generic_connector.pipeline import Pipeline
from generic_connector.request import IncomingRequest
from tests.platform_api import PlatformAPI
from tests.test_pipeline import Echo

BOT_TOKEN = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture()
def api() -> Iterator[PlatformAPI]:
    server = PlatformAPI()
    yield server
    server.close()


def channel(api_url: str, **download: Any) -> Dict[str, Any]:
    """Telegram's two calls for a file (https://core.telegram.org/bots/api#getfile): getFile
    gives file_path, then the file is at /file/bot<token>/<file_path>."""
    return {
        "name": "media",
        "request": {
            "fetch": [
                {
                    "name": "file",
                    "when": "message.photo",
                    "url": "join('', [env('API_URL'), '/bot', env('BOT_TOKEN'), "
                    "'/getFile?file_id=', message.photo[-1].file_id])",
                }
            ],
            "sender": "message.chat.id",
            "text": "message.text || message.caption || '/attachment'",
            "attachments": "message.photo[-1:].{type: 'image', id: file_id, size: file_size}",
            "download": {
                "url": "join('', [env('API_URL'), '/file/bot', env('BOT_TOKEN'), '/', "
                "event.fetched.file.result.file_path])",
                **download,
            },
        },
        "response": {"body": "`{}`"},
    }


PHOTO = {
    "update_id": 9001,
    "message": {
        "message_id": 3,
        "chat": {"id": 42, "type": "private"},
        "photo": [
            {"file_id": "small-id", "file_unique_id": "s", "width": 90, "height": 90},
            {"file_id": "big-id", "file_unique_id": "b", "width": 800, "height": 800,
             "file_size": 72},
        ],
    },
}  # fmt: skip


def run(config: Dict[str, Any], body: Dict[str, Any]) -> Tuple[Any, List[Any]]:
    loaded = load_channel(config)
    parts = stores.build(loaded)
    pipeline = Pipeline(loaded, parts.store, parts.outbox, fetcher=parts.fetcher)
    assistant = Echo()

    async def once() -> Any:
        try:
            request = IncomingRequest.from_parts(json.dumps(body).encode())
            return (await pipeline.run(request, assistant))[1]
        finally:
            assert parts.fetcher is not None
            await parts.fetcher.close()

    return asyncio.run(once()), assistant.handled


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, api: PlatformAPI) -> None:
    monkeypatch.setenv("API_URL", api.url)
    monkeypatch.setenv("BOT_TOKEN", BOT_TOKEN)


def plan_file(api: PlatformAPI, content: bytes = PNG) -> None:
    got = {"ok": True, "result": {"file_id": "big-id", "file_path": "photos/file_7.png"}}
    api.plan(lambda r: "/getFile" in r.path, [(200, {}, got)])
    api.plan(lambda r: r.path.startswith("/file/"), [(200, {"Content-Type": "image/png"}, content)])


def test_a_photo_is_downloaded_with_the_token_into_metadata(env: None, api: PlatformAPI) -> None:
    plan_file(api)
    answer, handled = run(channel(api.url), PHOTO)
    assert answer.status == 200
    [message] = handled
    assert message.text == "/attachment"  # a photo without a caption
    assert message.metadata == {
        "attachments": [
            {
                "type": "image",
                "id": "big-id",
                "size": len(PNG),
                "data": base64.b64encode(PNG).decode(),
                "mime": "image/png",
            }
        ]
    }
    assert [r.path for r in api.requests] == [
        f"/bot{BOT_TOKEN}/getFile?file_id=big-id",
        f"/file/bot{BOT_TOKEN}/photos/file_7.png",
    ]
    assert BOT_TOKEN not in json.dumps(message.metadata)  # the URL is kept nowhere


def test_an_attachment_over_max_size_is_recorded_without_its_content(
    env: None, api: PlatformAPI
) -> None:
    plan_file(api, PNG * 10)
    answer, [message] = run(channel(api.url, max_size=100), PHOTO)
    assert answer.status == 200
    assert message.metadata["attachments"] == [
        {"type": "image", "id": "big-id", "size": 72,
         "error": "larger than 100 bytes; not downloaded"}
    ]  # fmt: skip


def test_a_download_that_fails_answers_503_so_the_platform_retries(
    env: None, api: PlatformAPI
) -> None:
    got = {"ok": True, "result": {"file_path": "photos/file_7.png"}}
    api.plan(lambda r: "/getFile" in r.path, [(200, {}, got)])
    api.plan(lambda r: r.path.startswith("/file/"), [(502, {}, {})] * 3)
    answer, handled = run(channel(api.url, retries=1), PHOTO)
    assert answer.status == 503
    assert handled == []
    assert BOT_TOKEN.encode() not in answer.body


def test_a_text_message_has_no_attachments_and_nothing_is_fetched(
    env: None, api: PlatformAPI
) -> None:
    text = {"update_id": 9002, "message": {"message_id": 4, "chat": {"id": 42}, "text": "hi"}}
    answer, [message] = run(channel(api.url), text)
    assert (answer.status, message.text, message.metadata, api.requests) == (200, "hi", None, [])


def test_the_dry_run_takes_a_sample_download(env: None) -> None:
    config = load_channel(channel("https://api.telegram.org"))
    result = simulate(
        config,
        IncomingRequest.from_parts(json.dumps(PHOTO).encode()),
        fetched={"file": {"result": {"file_path": "p.png"}}, "download": "sample bytes"},
    )
    [message] = result["messages"]
    assert (
        message["metadata"]["attachments"][0]["data"] == base64.b64encode(b"sample bytes").decode()
    )


def test_attachments_that_are_no_objects_are_refused_with_the_field() -> None:
    config = channel("https://api.telegram.org")
    config["request"]["attachments"] = "message.photo[].file_id"
    del config["request"]["download"]
    config["request"]["fetch"] = []
    result = simulate(load_channel(config), IncomingRequest.from_parts(json.dumps(PHOTO).encode()))
    assert result["status"] == 422
    assert result["error"]["field"] == "attachments"


def test_a_download_url_from_request_data_needs_allow_hosts() -> None:
    config = channel("https://api.telegram.org")
    config["request"]["download"] = {"url": "event.message.photo[0].url"}
    _, findings, _ = check_channel(config)
    assert [(f.code, f.path) for f in findings] == [
        ("url-from-request", "media.request.download.url")
    ]
