"""Language codes: the ISO 639-1 codes the gateway works in, and their BCP-47 forms.

Jobs always carry ISO 639-1 (``"bg"``). Clients of the streaming protocol speak BCP-47
(``"bg-BG"``, ``"en-US"``) and vendors such as Google want BCP-47 too; this module converts both
ways so that neither the adapters nor the backends keep their own tables.
"""

from __future__ import annotations

import re

__all__ = [
    "BATCH_LANGUAGES",
    "DEFAULT_REGION",
    "LANGUAGE_NAMES",
    "canonical_tag",
    "from_bcp47",
    "language_name",
    "language_of",
    "to_bcp47",
]

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

LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian",
    "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala",
    "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi",
    "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}  # fmt: skip
"""English names of the languages Whisper knows, lower case, as OpenAI's transcription API
writes them (``"language": "english"``)."""

_BCP47 = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")

_SAME_LANGUAGE = {"iw": "he", "in": "id", "ji": "yi", "cmn": "zh", "nb": "no", "fil": "tl"}
"""Language subtags that name a language the gateway knows by another code: the ones ISO 639
retired (Hebrew ``iw``, Indonesian ``in``, Yiddish ``ji``, still in Java's and Android's
locales and in Google's list: ``iw-IL``), and those Google Speech-to-Text lists its languages
under (Mandarin ``cmn-Hans-CN``, Norwegian Bokmal ``nb-NO``, Filipino ``fil-PH``, which
Whisper knows as Tagalog)."""


def from_bcp47(tag: str) -> str | None:
    """``"en-US"`` -> ``"en"``, ``"es-419"`` -> ``"es"``, ``"cmn-Hans-CN"`` -> ``"zh"``; None
    for something that is no tag."""
    match = _BCP47.match(tag.strip())
    if not match:
        return None
    language = match.group(1).lower()
    return _SAME_LANGUAGE.get(language, language)


def canonical_tag(tag: str) -> str | None:
    """A BCP-47 tag in its canonical case with hyphens (RFC 5646 2.1.1): ``"en_us"`` ->
    ``"en-US"``, ``"zh-hant-tw"`` -> ``"zh-Hant-TW"``; None for something that is no tag.
    What a backend that tells regional variants apart is sent (``pt-BR`` is not ``pt-PT``)."""
    tag = tag.strip()
    if not _BCP47.match(tag):
        return None
    first, *rest = tag.replace("_", "-").split("-")
    subtags = [first.lower()]
    for subtag in rest:
        if len(subtag) == 2 and subtags[-1] != "x":
            subtags.append(subtag.upper())  # region
        elif len(subtag) == 4 and subtag.isalpha() and len(subtags) == 1:
            subtags.append(subtag.title())  # script
        else:
            subtags.append(subtag.lower())
    return "-".join(subtags)


_NAMED = {name: code for code, name in LANGUAGE_NAMES.items()} | {
    # the other names openai-whisper takes for these languages
    "burmese": "my", "castilian": "es", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
    "mandarin": "zh", "moldavian": "ro", "moldovan": "ro", "panjabi": "pa", "pushto": "ps",
    "sinhalese": "si", "valencian": "ca",
}  # fmt: skip


def language_of(text: str) -> str | None:
    """The ISO 639-1 code of a language a client named: by code or BCP-47 tag (``"de"``,
    ``"de-DE"``: :func:`from_bcp47`), or by its English name, in any case (``"German"``), as
    openai-whisper's ``--language`` takes it and OpenAI's ``verbose_json`` writes it, so that
    a client can send back the language it was told. None for neither. (The batch and
    streaming protocols specify codes and tags only, and take only those.)"""
    return _NAMED.get(" ".join(text.split()).lower()) or from_bcp47(text)


def language_name(iso: str) -> str:
    """``"de"`` -> ``"german"``; a code without a known name is returned as it is."""
    return LANGUAGE_NAMES.get(iso, iso)


def to_bcp47(iso: str) -> str:
    """``"bg"`` -> ``"bg-BG"``; an ISO code without a known region is returned as it is."""
    return DEFAULT_REGION.get(iso, iso)
