"""Language codes: the ISO 639-1 codes the gateway works in, and their BCP-47 forms.

Jobs always carry ISO 639-1 (``"bg"``). Clients of the streaming protocol speak BCP-47
(``"bg-BG"``, ``"en-US"``) and vendors such as Google want BCP-47 too; this module converts both
ways so that neither the adapters nor the backends keep their own tables.
"""

from __future__ import annotations

import re

__all__ = ["BATCH_LANGUAGES", "DEFAULT_REGION", "from_bcp47", "normalise_iso", "to_bcp47"]

BATCH_LANGUAGES: tuple[str, ...] = (
    "bg", "en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "cs", "da", "sv",
    "hr", "el", "hu", "ro", "sk", "sl", "et", "fi", "lv", "lt", "mt", "uk",
)  # fmt: skip
"""The languages batch-protocol.txt promises; every default backend supports all of them."""

DEFAULT_REGION: dict[str, str] = {
    "bg": "bg-BG", "en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT",
    "pt": "pt-PT", "nl": "nl-NL", "pl": "pl-PL", "ru": "ru-RU", "cs": "cs-CZ", "da": "da-DK",
    "sv": "sv-SE", "hr": "hr-HR", "el": "el-GR", "hu": "hu-HU", "ro": "ro-RO", "sk": "sk-SK",
    "sl": "sl-SI", "et": "et-EE", "fi": "fi-FI", "lv": "lv-LV", "lt": "lt-LT", "mt": "mt-MT",
    "uk": "uk-UA", "ja": "ja-JP", "ko": "ko-KR", "zh": "zh-CN",
}  # fmt: skip
"""The BCP-47 tag used when a bare ISO code must be sent to a vendor that wants a region."""

_ISO = re.compile(r"^[a-z]{2,3}$")
_BCP47 = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")


def normalise_iso(code: str) -> str | None:
    """``"EN"`` -> ``"en"``; None when ``code`` is not shaped like an ISO 639 code."""
    lowered = code.strip().lower()
    return lowered if _ISO.match(lowered) else None


def from_bcp47(tag: str) -> str | None:
    """``"en-US"`` -> ``"en"``, ``"es-419"`` -> ``"es"``; None for something that is no tag."""
    match = _BCP47.match(tag.strip())
    return match.group(1).lower() if match else None


def to_bcp47(iso: str) -> str:
    """``"bg"`` -> ``"bg-BG"``; an ISO code without a known region is returned as it is."""
    return DEFAULT_REGION.get(iso, iso)
