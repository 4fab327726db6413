"""A Rasa input channel configured entirely in YAML.

``generic_connector.GenericChannel`` is the credentials key; the class is imported lazily so
that the validation command does not pay for importing Rasa.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["GenericChannel", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "GenericChannel":
        from generic_connector.channel import GenericChannel

        return GenericChannel
    raise AttributeError(f"module 'generic_connector' has no attribute {name!r}")
