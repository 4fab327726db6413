"""Mapping micro-benchmark: the cost per event of shipped mappings against hand-written Python.

Each mapping maps its documented example (select events, ignore rules, sender, text, input
channel, metadata, message id) the way the channel does; the hand-written functions do the
same work the way a custom Rasa connector would. Prints µs per event and the ratio.

    .venv/bin/python bench/mappings.py
"""

import json
import sys
import timeit
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generic_connector.config import check_channel, load_yaml  # noqa: E402
from generic_connector.mapping import IgnoreRule  # noqa: E402

PAYLOADS = ROOT / "tests" / "payloads"


def mapped(name: str) -> Callable[[Any], Any]:
    config, findings, _ = check_channel(load_yaml(ROOT / "mappings" / f"{name}.yml"))
    assert config is not None, findings
    mapping = config.request

    def run(body: Any) -> list:
        mapped = [mapping.map(event) for event in mapping.select_events(body)]
        return [extracted for extracted in mapped if type(extracted) is not IgnoreRule]

    return run


def telegram_by_hand(update: Dict[str, Any]) -> list:
    message = update.get("message") or {}
    callback = update.get("callback_query") or {}
    text = message.get("text") or callback.get("data")
    if not text:
        return []
    chat = message.get("chat") or (callback.get("message") or {}).get("chat") or {}
    user = message.get("from") or callback.get("from") or {}
    sender = chat.get("id") or user.get("id")
    metadata = {
        "update_id": update.get("update_id"),
        "chat_type": chat.get("type") if message else None,
        "callback_query_id": callback.get("id"),
        "user": {k: user.get(k) for k in ("id", "username", "first_name")},
    }
    return [(str(sender), text, "telegram", metadata, str(update["update_id"]))]


def rest_by_hand(body: Dict[str, Any]) -> list:
    return [
        (
            str(body["sender"]),
            body["message"],
            body.get("input_channel") or "rest",
            body.get("metadata"),
            None,
        )
    ]


def whatsapp_by_hand(body: Dict[str, Any]) -> list:
    mapped_events = []
    for entry in body.get("entry", []):
        for change in entry.get("changes", []):
            value = change.get("value", {})
            for message in value.get("messages", []):
                text = (message.get("text") or {}).get("body") or (
                    (message.get("interactive") or {}).get("button_reply") or {}
                ).get("id")
                if not text:
                    continue
                metadata = {
                    "type": message.get("type"),
                    "timestamp": message.get("timestamp"),
                    "reply_title": None,
                    "phone_number_id": value.get("metadata", {}).get("phone_number_id"),
                }
                mapped_events.append((message["from"], text, "whatsapp", metadata, message["id"]))
    return mapped_events


CASES: Dict[str, Tuple[Any, Callable[[Any], Any]]] = {
    "telegram (message)": (
        json.loads((PAYLOADS / "telegram/message.json").read_text()),
        telegram_by_hand,
    ),
    "rest": ({"sender": "test_user", "message": "Hi there!"}, rest_by_hand),
    "whatsapp (text)": (
        json.loads((PAYLOADS / "whatsapp/text_message.json").read_text()),
        whatsapp_by_hand,
    ),
}
MAPPINGS = {"telegram (message)": "telegram", "rest": "rest", "whatsapp (text)": "whatsapp"}


def per_call(function: Callable[[Any], Any], body: Any) -> float:
    timer = timeit.Timer(lambda: function(body))
    count, _ = timer.autorange()
    return min(timer.repeat(5, count)) / count * 1e6


def main() -> None:
    print(f"{'mapping':<22}{'generic µs':>12}{'by hand µs':>12}{'ratio':>8}")
    for label, (body, by_hand) in CASES.items():
        generic = mapped(MAPPINGS[label])
        assert len(generic(body)) == len(by_hand(body)) == 1
        ours, theirs = per_call(generic, body), per_call(by_hand, body)
        print(f"{label:<22}{ours:>12.2f}{theirs:>12.2f}{ours / theirs:>7.1f}x")


if __name__ == "__main__":
    main()
