"""Extra credentials keys, so that one credentials.yml can declare several generic channels.

Rasa keys channels by module path and YAML keys are unique, so a second generic channel
cannot reuse ``generic_connector.GenericChannel``. Any ``generic_connector.channels.<label>``
resolves to the same class; the label only keeps the keys apart::

    generic_connector.channels.telegram:
      mapping: mappings/telegram.yml
"""

from typing import Type

from generic_connector.channel import GenericChannel


def __getattr__(label: str) -> Type[GenericChannel]:
    if label.startswith("__"):
        raise AttributeError(label)
    return GenericChannel
