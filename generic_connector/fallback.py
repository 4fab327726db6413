"""Kinds a platform cannot show: bot messages turned into text, and numbered answers mapped back.

``outbound.renders`` lists the message kinds the platform shows. A bot message with a part of a
kind it does not list, and that has a text form, becomes one text message:

- buttons (and quick replies): the text, then one line per button, numbered from 1
  (``outbound.numbered``, default ``{n}. {title}``); the buttons offered are remembered for the
  conversation, so that the user's answer ``2`` (or a button's title) maps back to its payload;
- an image, an attachment: the text, then the URL on a line of its own.

Custom payloads and carousels (``elements``) have no text form: they go through their template,
if the mapping has one, as without ``renders``. Pure functions over bot messages: the pipeline
writes and reads what is offered (``conversations.OFFERED``).
"""

import re
from typing import Any, Collection, Dict, FrozenSet, List, Mapping, Optional, Tuple

from generic_connector.defaults import NUMBERED

# The kinds with a text form, in the order their parts follow the text.
FALLBACK_KINDS = ("buttons", "image", "attachment")

Offer = List[Dict[str, Any]]  # [{"n": 1, "title": "Say hello", "payload": "/greet"}, ...]

_NUMBER = re.compile(r"\s*([0-9]{1,6})\s*")


def unrendered(renders: Optional[Collection[str]]) -> FrozenSet[str]:
    """The kinds with a text form that ``renders`` leaves out (none when it is not given)."""
    if renders is None:
        return frozenset()
    return frozenset(kind for kind in FALLBACK_KINDS if kind not in renders)


def numbered_line(template: str, number: int, title: str) -> str:
    """One button as a line: ``{n}`` and ``{title}`` of ``template`` replaced."""
    return template.replace("{n}", str(number)).replace("{title}", title)


def offer_of(message: Mapping[str, Any]) -> Offer:
    """The buttons (or quick replies) of a bot message, numbered from 1; a button without a
    payload maps back to its title."""
    buttons = message.get("buttons") or message.get("quick_replies") or []
    offer: Offer = []
    for button in buttons:
        if not isinstance(button, Mapping):
            continue
        title = str(button.get("title") or "")
        payload = button.get("payload")
        payload = title if payload is None or payload == "" else str(payload)
        offer.append({"n": len(offer) + 1, "title": title, "payload": payload})
    return offer


def url_of(part: Any) -> Optional[str]:
    """The URL of an image or attachment: the string itself, or an object's ``url`` (or
    ``payload.url``, as Rasa's attachments carry it)."""
    if isinstance(part, str):
        return part or None
    if isinstance(part, Mapping):
        url = part.get("url")
        payload = part.get("payload")
        if not url and isinstance(payload, Mapping):
            url = payload.get("url")
        return url if isinstance(url, str) and url else None
    return None


def as_text(
    message: Mapping[str, Any], kinds: Collection[str], numbered: str = NUMBERED
) -> Tuple[Dict[str, Any], Optional[Offer]]:
    """The message with its parts of ``kinds`` written into its text, and the buttons it offers
    that way (None when it offers none). A message without such parts is returned as it is."""
    lines = [message["text"]] if message.get("text") else []
    changed: Dict[str, Any] = dict(message)
    offer: Optional[Offer] = None
    if "buttons" in kinds and (message.get("buttons") or message.get("quick_replies")):
        offer = offer_of(message)
        lines += [numbered_line(numbered, item["n"], item["title"]) for item in offer]
        changed.pop("buttons", None)
        changed.pop("quick_replies", None)
    for kind in ("image", "attachment"):
        if kind in kinds and message.get(kind):
            url = url_of(message[kind])
            if url is not None:
                lines.append(url)
                changed.pop(kind)
    if len(changed) == len(message):
        return dict(message), None
    changed["text"] = "\n".join(lines)
    return changed, offer or None


def replies_as_text(
    replies: List[Dict[str, Any]], kinds: Collection[str], numbered: str = NUMBERED
) -> Tuple[List[Dict[str, Any]], Optional[Offer]]:
    """``as_text`` over a turn's replies; the offer is the last message's that offers buttons
    (its numbers are the ones the user sees last)."""
    if not kinds:
        return replies, None
    changed, offer = [], None
    for message in replies:
        message, offered = as_text(message, kinds, numbered)
        changed.append(message)
        offer = offered if offered is not None else offer
    return changed, offer


def chosen(offer: Any, text: str) -> Optional[str]:
    """The payload of the offered button the user's ``text`` names: its number (spaces around
    it allowed) or its title (case ignored); None when it names none."""
    if not isinstance(offer, list):
        return None
    number = _NUMBER.fullmatch(text)
    wanted = text.strip().casefold()
    for item in offer:
        if not isinstance(item, Mapping):
            continue
        if number is not None:
            if item.get("n") == int(number.group(1)):
                return str(item.get("payload"))
        elif wanted and str(item.get("title", "")).strip().casefold() == wanted:
            return str(item.get("payload"))
    return None
