"""API keys: who may use the gateway, known by name.

Keys are held only as SHA-256 digests and compared with :func:`hmac.compare_digest` against
every stored digest (no early exit), so neither the stored set nor the timing of a check gives
a key away. What leaves this module is the key's *name*.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from .config import AuthConfig
from .errors import Unauthorized

__all__ = ["Keyring", "hash_key"]


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class Keyring:
    """The configured keys. Empty means authentication is off: every caller is ``anonymous``."""

    def __init__(self, digests: Iterable[tuple[str, bytes]] = ()) -> None:
        self._digests: tuple[tuple[str, bytes], ...] = tuple(digests)

    @classmethod
    def from_config(cls, auth: AuthConfig, env: Mapping[str, str]) -> Keyring:
        entries = [(k.name, hash_key(k.key)) for k in auth.keys]
        if env.get("SERVER_API_KEY"):
            entries.append((auth.env_key_name, hash_key(env["SERVER_API_KEY"])))
        return cls(entries)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def authenticate(self, presented: object) -> str:
        """The name of the key ``presented``, or ``"anonymous"`` when no keys are configured.

        Raises:
            Unauthorized: keys are configured and ``presented`` is missing, not a string, or
                matches none of them.
        """
        if not self._digests:
            return "anonymous"
        if not isinstance(presented, str) or not presented:
            raise Unauthorized("an API key is required")
        digest = hash_key(presented)
        found = None
        for name, stored in self._digests:
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        if found is None:
            raise Unauthorized("invalid API key")
        return found
