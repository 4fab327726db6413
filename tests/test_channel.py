"""The channel's collector against Rasa's own."""

from rasa.core.channels.channel import CollectingOutputChannel

from generic_connector.channel import GenericOutputChannel


def test_the_collector_starts_as_rasas_does_under_the_channels_name() -> None:
    # GenericOutputChannel sets CollectingOutputChannel's attributes itself (no super call).
    ours = GenericOutputChannel("telegram")
    assert vars(ours) == {**vars(CollectingOutputChannel()), "channel_name": "telegram"}
    assert ours.name() == "telegram"
