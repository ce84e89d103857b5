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

    async def authenticate(self, presented: object) -> tuple[str, bool]:
        """The name of the key ``presented`` (``"anonymous"`` when no keys are configured),
        and whether keys are configured (then per-key limits apply).

        Config and environment keys are checked here; the store is asked at every request (one
        round trip that also says whether it manages keys), so that ``speechgw keys create``
        or ``revoke`` on any replica applies at the next request, without a restart.

        Raises:
            Unauthorized: keys are configured and ``presented`` is missing, not a string, or
                matches none of them.
            StoreUnavailable: the store must be asked and cannot be reached (keys fail closed).
        """
        valid = isinstance(presented, str) and bool(presented)
        digest = hash_key(presented) if valid else None  # type: ignore[arg-type]
        found = None
        if digest is not None:
            for name, stored in self._digests:
                if hmac.compare_digest(digest, stored) and found is None:
                    found = name
        if found is not None:
            return found, True
        managed = bool(self._digests)
        if self._store is not None:
            # looked up by digest: the index reveals nothing about the key itself
            lookup = await self._store.find_key(digest)
            if lookup.name is not None:
                return lookup.name, True
            managed = managed or lookup.managed
        if not managed:
            return "anonymous", False
        if not valid:
            raise Unauthorized("an API key is required")
        raise Unauthorized("invalid API key")
