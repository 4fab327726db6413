"""Platform limits: a long text split into several messages, a turn's messages sent in several
requests, and the spacing between one conversation's requests.

Pure functions over bot messages (the dicts Rasa gives) and numbers: no I/O, no clock. The
pipeline splits texts before rendering (``pipeline.deliver``), ``Outbound.render_replies``
batches a turn's messages, and the outboxes (in memory and on Redis) space the requests.

Lengths are counted in UTF-16 code units, as LINE documents and as Telegram's and JavaScript
platforms' counts go: an emoji outside the Basic Multilingual Plane counts 2. That is never
less than the count in code points, so a part that fits here fits there too.
"""

import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, TypeVar

# The parts of a bot message that go with the last part of a split text (buttons come after
# the whole text); the earlier parts carry the text alone.
TRAILING_PARTS = ("buttons", "quick_replies", "image", "attachment", "elements", "custom")

_ZWJ = "\u200d"
T = TypeVar("T")


def text_length(text: str) -> int:
    """``text``'s length in UTF-16 code units."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def split_text(text: str, limit: int) -> List[str]:
    """``text`` in parts of at most ``limit`` UTF-16 code units, cut at whitespace.

    A part ends at the last line break in the second half of its room, else at its last
    whitespace; the whitespace at a cut is dropped (the parts, each followed by the whitespace
    it was cut at, give the text again), line breaks inside a part are kept. A word longer
    than ``limit`` is cut where the room ends, though not inside a character's combining
    marks, a ZWJ sequence, a variation selector or a flag's pair (when a cluster fills the
    whole room, it is cut anyway). Whitespace at the ends of a text that is split is dropped. A
    text within the limit is the one part; so is an empty one.
    """
    if limit < 1:
        raise ValueError("the limit must be at least 1")
    parts: List[str] = []
    rest = text.strip() if text_length(text) > limit else text
    while text_length(rest) > limit:
        room = _room(rest, limit)
        cut = _word_cut(rest, room)
        if cut:
            part, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        else:
            cut = _cluster_cut(rest, room)
            part, rest = rest[:cut], rest[cut:]
        parts.append(part)
    if rest or not parts:
        parts.append(rest)
    return parts


def _room(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` code units (at least 1)."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return max(1, index)
    return len(text)


def _word_cut(text: str, room: int) -> int:
    """Where to cut ``text`` at whitespace within ``room`` characters (the whitespace right
    after them included); 0 when there is none with something before it."""
    first = len(text) - len(text.lstrip())  # what comes before is no part
    newline = text.rfind("\n", 0, room + 1)
    if newline >= room // 2 and newline > first:
        return newline
    for index in range(min(room, len(text) - 1), first, -1):
        if text[index].isspace():
            return index
    return 0


def _cluster_cut(text: str, room: int) -> int:
    """``room``, moved back so as not to part a character from what joins it."""
    cut = room
    while cut > 0 and _joined(text, cut):
        cut -= 1
    return cut or room


def _joined(text: str, at: int) -> bool:
    """Whether cutting ``text`` before index ``at`` would split a grapheme cluster (cheaply:
    combining marks, ZWJ sequences, variation selectors, skin tones, flags, CR LF)."""
    before, after = text[at - 1], text[at]
    if after == _ZWJ or before == _ZWJ or (before == "\r" and after == "\n"):
        return True
    code = ord(after)
    if 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF or 0x1F3FB <= code <= 0x1F3FF:
        return True
    if unicodedata.category(after) in ("Mn", "Mc", "Me"):
        return True
    if _regional(after) and _regional(before):
        run = 0  # regional indicators pair up from the start of their run
        while at - run - 1 >= 0 and _regional(text[at - run - 1]):
            run += 1
        return run % 2 == 1
    return False


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def split_message(message: Mapping[str, Any], limit: int) -> List[Dict[str, Any]]:
    """A bot message whose text is longer than ``limit``, as several: the text's parts in
    order, the last one with the message's buttons, quick replies, image, attachment, carousel
    and custom payload. A message within the limit (or without text) is the one message."""
    text = message.get("text")
    if not isinstance(text, str) or text_length(text) <= limit:
        return [dict(message)]
    parts = split_text(text, limit)
    alone = {key: value for key, value in message.items() if key not in TRAILING_PARTS}
    split = [{**alone, "text": part} for part in parts[:-1]]
    return [*split, {**message, "text": parts[-1]}]


def split_replies(
    replies: Sequence[Mapping[str, Any]], limit: Optional[int]
) -> List[Dict[str, Any]]:
    """Every reply split at ``limit`` (``outbound.max_text``), in order; None: unchanged."""
    if limit is None:
        return [dict(reply) for reply in replies]
    return [part for reply in replies for part in split_message(reply, limit)]


def batches(items: Sequence[T], size: Optional[int]) -> Iterator[List[T]]:
    """``items`` in consecutive lists of at most ``size`` (all in one when None)."""
    if size is None or size >= len(items):
        yield list(items)
        return
    if size < 1:
        raise ValueError("the batch size must be at least 1")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass(frozen=True)
class Rate:
    """``outbound.rate``: requests of one conversation per second and per minute (either
    optional). Enforced by spacing: two requests of one conversation are at least
    ``spacing`` seconds apart, which keeps within both rates (the per-minute one
    conservatively: no burst is taken even when the minute has room for it)."""

    per_second: Optional[float] = None
    per_minute: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("per_second", "per_minute"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"outbound.rate.{name} must be more than 0")

    @property
    def spacing(self) -> float:
        """Seconds between the starts of two requests of one conversation."""
        gaps = [1.0 / self.per_second if self.per_second else 0.0]
        gaps.append(60.0 / self.per_minute if self.per_minute else 0.0)
        return max(gaps)


def due_after(last: Optional[float], spacing: float, now: float) -> float:
    """Seconds to wait at ``now`` before a conversation's next request, its last one having
    started at ``last`` (None: none yet)."""
    if last is None or spacing <= 0:
        return 0.0
    return max(0.0, last + spacing - now)
