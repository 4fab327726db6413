"""A lock store for ``rasa run`` in the tests: Rasa's in-memory one, except that a conversation
whose sender starts with ``poison`` cannot be locked, so that Rasa raises on its messages (its
tracker stores would only log a failure). Named in endpoints.yml as
``tests.poison_store.PoisonLockStore``.
"""

from typing import Any

from rasa.core.lock_store import InMemoryLockStore


class PoisonLockStore(InMemoryLockStore):
    def __init__(self, endpoint_config: Any = None) -> None:
        super().__init__()

    def issue_ticket(self, conversation_id: str, lock_lifetime: float = 60) -> int:
        if conversation_id.startswith("poison"):
            raise RuntimeError("this conversation cannot be locked")
        return super().issue_ticket(conversation_id, lock_lifetime)
