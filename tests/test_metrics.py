"""The metrics exposition: plain counts turned into Prometheus series when scraped."""

from typing import Dict

from generic_connector.metrics import ChannelMetrics, exposition


def series(channel: str) -> Dict[str, float]:
    """The exposition's samples of one channel, by series name and labels."""
    found = {}
    for line in exposition().decode().splitlines():
        if line and not line.startswith("#") and f'channel="{channel}"' in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_counts_of_a_channels_parts_are_summed_into_its_series() -> None:
    pipeline, delivery = ChannelMetrics("summed"), ChannelMetrics("summed")
    pipeline.requests[200] += 3
    pipeline.requests[401] += 1
    pipeline.ignored["no_text"] += 2
    pipeline.duplicates += 1
    delivery.outbound["delivered"] += 4
    delivery.outbound["retried"] += 1
    delivery.pending = 2
    found = series("summed")
    assert found['generic_connector_requests_total{channel="summed",status="200"}'] == 3
    assert found['generic_connector_requests_total{channel="summed",status="401"}'] == 1
    assert found['generic_connector_events_ignored_total{channel="summed",rule="no_text"}'] == 2
    assert found['generic_connector_duplicates_total{channel="summed"}'] == 1
    attempts = 'generic_connector_outbound_attempts_total{channel="summed",outcome="%s"}'
    assert found[attempts % "delivered"] == 4
    assert found[attempts % "retried"] == 1
    assert found[attempts % "failed"] == 0  # every outcome is there before it first happens
    assert found['generic_connector_outbound_pending{channel="summed"}'] == 2


def test_assistant_times_are_a_cumulative_histogram() -> None:
    metrics = ChannelMetrics("timed")
    for seconds in (0.004, 0.025, 0.3, 45.0):  # 0.025 is on a bound: it is counted there
        metrics.handled(seconds)
    found = series("timed")
    bucket = 'generic_connector_assistant_seconds_bucket{channel="timed",le="%s"}'
    assert found[bucket % "0.01"] == 1
    assert found[bucket % "0.025"] == 2
    assert found[bucket % "0.25"] == 2
    assert found[bucket % "0.5"] == 3
    assert found[bucket % "30.0"] == 3
    assert found[bucket % "+Inf"] == 4
    assert found['generic_connector_assistant_seconds_count{channel="timed"}'] == 4
    assert abs(found['generic_connector_assistant_seconds_sum{channel="timed"}'] - 45.329) < 1e-9
