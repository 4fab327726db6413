"""One retry policy for every call to a platform and every stored message: which answers are
worth another attempt, and how long to wait before it.

Outbound delivery (in memory and on Redis), fetching before mapping and the inbox of early
acknowledgement all use it, so a platform's 408 or a ``Retry-After`` is treated the same way
whatever the store.
"""

import email.utils
import json
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from generic_connector import defaults

# Answers that say "not now" rather than "never": a timeout, too early, too many, the server's
# own trouble. Any other 4xx is the request's fault and is not sent again.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES


def retry_after(value: Optional[str], limit: float = defaults.MAX_RETRY_AFTER) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), at most
    ``limit``; None when there is none or it cannot be read."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, limit))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**(failures - 1)``, at most ``cap``, times a
    random factor in [0.5, 1.5) so that replicas do not retry in step."""

    base: float
    cap: float
    jitter: Callable[[float, float], float] = random.uniform

    def delay(self, failures: int, asked: Optional[float] = None) -> float:
        """Seconds before the next attempt after ``failures`` failed ones (1 or more); what a
        ``Retry-After`` asked for (``asked``) wins."""
        if asked is not None:
            return asked
        return min(self.cap, self.base * 2 ** max(0, failures - 1)) * self.jitter(0.5, 1.5)


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: done, to retry (after ``delay`` when the far side said how long),
    or refused for good. ``counted=False``: it does not spend the retry budget (the assistant
    was not ready). ``answer``: the platform's, as it came (mask it before showing it)."""

    done: bool
    retry: bool = False
    delay: Optional[float] = None
    counted: bool = True
    status: Optional[int] = None
    answer: str = ""
    problem: str = ""
    value: Any = None  # a chain step's answer (its JSON, or its text), for the next request

    def stored(self) -> str:
        """What is kept of it between attempts (a shared store's, across replicas)."""
        return json.dumps({"status": self.status, "answer": self.answer, "problem": self.problem})
