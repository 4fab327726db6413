"""Prometheus metrics of every generic channel of the process, in one registry.

Each channel serves them at ``GET /webhooks/<name>/metrics`` (``metrics.path``); they are the
same for every channel, labelled by channel. Names follow Prometheus' conventions: counters end
in ``_total``, durations are in seconds.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "generic_connector_requests_total",
    "Webhook requests answered, by channel and HTTP status.",
    ["channel", "status"],
    registry=REGISTRY,
)
EVENTS_IGNORED = Counter(
    "generic_connector_events_ignored_total",
    "Events acknowledged but not handed to Rasa, by the ignore rule that matched.",
    ["channel", "rule"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "generic_connector_duplicates_total",
    "Messages recognised as already handled (the same message id), not handled again.",
    ["channel"],
    registry=REGISTRY,
)
ASSISTANT_SECONDS = Histogram(
    "generic_connector_assistant_seconds",
    "Time Rasa took to handle one user message (NLU, policies, actions).",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
OUTBOUND_ATTEMPTS = Counter(
    "generic_connector_outbound_attempts_total",
    "Requests to platforms' APIs, by outcome: delivered, retried, failed.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
OUTBOUND_PENDING = Gauge(
    "generic_connector_outbound_pending",
    "Outbound requests of this process waiting for delivery.",
    ["channel"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)


CONTENT_TYPE = CONTENT_TYPE_LATEST


class ChannelMetrics:
    """One channel's series, bound once: ``labels()`` on every request would cost more."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._requests: dict = {}
        self.duplicates = DUPLICATES.labels(channel)
        self.assistant_seconds = ASSISTANT_SECONDS.labels(channel)
        self.delivered = OUTBOUND_ATTEMPTS.labels(channel, "delivered")
        self.retried = OUTBOUND_ATTEMPTS.labels(channel, "retried")
        self.failed = OUTBOUND_ATTEMPTS.labels(channel, "failed")
        self.pending = OUTBOUND_PENDING.labels(channel)

    def answered(self, status: int) -> None:
        counter = self._requests.get(status)
        if counter is None:
            counter = self._requests[status] = REQUESTS.labels(self.channel, str(status))
        counter.inc()

    def ignored(self, rule: str) -> None:
        EVENTS_IGNORED.labels(self.channel, rule).inc()
