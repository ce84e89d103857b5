"""API keys: who may use the gateway, known by name.

Keys are held only as SHA-256 digests and compared with :func:`hmac.compare_digest` against
every stored digest (no early exit), so neither the stored set nor the timing of a check gives
a key away. What leaves this module is the key's *name*.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .config import AuthConfig
from .errors import Unauthorized

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Keyring", "hash_key"]


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class Keyring:
    """The configured keys. Empty means authentication is off: every caller is ``anonymous``."""

    def __init__(
        self, digests: Iterable[tuple[str, bytes]] = (), store: Store | None = None
    ) -> None:
        self._digests: tuple[tuple[str, bytes], ...] = tuple(digests)
        self._store = store

    @classmethod
    def from_config(
        cls, auth: AuthConfig, env: Mapping[str, str], store: Store | None = None
    ) -> Keyring:
        entries = [(k.name, hash_key(k.key)) for k in auth.keys]
        if env.get("SERVER_API_KEY"):
            entries.append((auth.env_key_name, hash_key(env["SERVER_API_KEY"])))
        return cls(entries, store)

    @property
    def enabled(self) -> bool:
        """Keys in the config or environment, or a store that manages keys (read each time, so
        that ``speechgw keys create`` takes effect without a restart)."""
        return bool(self._digests) or (self._store is not None and self._store.has_keys())

    def authenticate(self, presented: object) -> str:
        """The name of the key ``presented``, or ``"anonymous"`` when no keys are configured.

        Raises:
            Unauthorized: keys are configured and ``presented`` is missing, not a string, or
                matches none of them.
        """
        if not self.enabled:
            return "anonymous"
        if not isinstance(presented, str) or not presented:
            raise Unauthorized("an API key is required")
        digest = hash_key(presented)
        found = None
        for name, stored in self._digests:
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        if found is None and self._store is not None:
            # looked up by digest: the index reveals nothing about the key itself
            found = self._store.key_name(presented)
        if found is None:
            raise Unauthorized("invalid API key")
        return found
