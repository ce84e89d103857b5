"""The Router: ordered config rules that pick the backend (and its fallbacks) for a job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .backend import Backend
from .config import RouteRule
from .errors import InvalidRequest, UnsupportedLanguage, UnsupportedTask
from .jobs import JobSpec

__all__ = ["DEFAULT_MODELS", "Route", "Router"]

DEFAULT_MODELS: tuple[str, ...] = (
    "whisper-1",
    "gpt-transcribe",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
)
"""The model names clients may send when no routing rule names any (``match.model``): OpenAI's
transcription models, as its SDK lists them (``AudioModel``), whose names its examples and the
tools built on them send (``whisper-1``; OpenAI's quickstart used ``gpt-4o-transcribe``;
``gpt-transcribe`` is the one its SDK does not mark deprecated), so that such a tool works
unchanged. Its diarizing model is not among them: a client asking for speakers gets a 400, not
a transcript without them. An admin who names models in the rules names all."""

Route = tuple[Backend, ...]
"""The backend to try first, then its fallbacks in order: only ones that can serve the job."""


def _in_languages(spec: JobSpec, languages: Sequence[str]) -> bool:
    """Whether a job is in one of a rule's ``languages``: its own, or, in no named language,
    every one it may be in (``languages[]``) is."""
    if spec.language is not None:
        return spec.language in languages
    return bool(spec.languages) and all(code in languages for code in spec.languages)


class Router:
    """Routes a :class:`JobSpec` by the first rule that matches it and whose backend can do it.

    A rule matches when each of its conditions (protocol, language, task, key name, model) is
    empty or contains the job's value. A matching rule whose backend cannot serve the job (its
    language, task, language detection or word timing) falls through to the next rule, so
    that "Google for everything, Whisper for translate" is two lines of config.
    """

    def __init__(self, rules: Sequence[RouteRule], backends: Mapping[str, Backend]) -> None:
        self._rules = tuple(rules)
        self._backends = dict(backends)
        named = sorted({model for rule in self._rules for model in rule.match.model})
        self.models: tuple[str, ...] = tuple(named) or DEFAULT_MODELS
        """The model names a client may ask for: those the rules name, else DEFAULT_MODELS."""

    def route(self, spec: JobSpec) -> Route:
        """The backends that serve ``spec``, first choice first.

        Raises:
            InvalidRequest: an unknown model; or word timestamps that no matching backend gives.
            UnsupportedTask: some matching backend knows the language but none does the task.
            UnsupportedLanguage: no matching backend recognises the language (or, for a job
                without one, detects it).
        """
        if spec.model is not None and spec.model not in self.models:
            known = ", ".join(self.models)
            raise InvalidRequest(
                f"model {spec.model[:64]!r} does not exist (known: {known})", field="model"
            )
        language_known = task_known = False
        for rule in self._rules:
            m = rule.match
            if (
                (m.protocol and spec.protocol not in m.protocol)
                or (m.language and not _in_languages(spec, m.language))
                or (m.task and spec.task not in m.task)
                or (m.key and spec.caller.key_name not in m.key)
                or (m.model and spec.model not in m.model)
            ):
                continue
            chain = [self._backends[name] for name in (rule.backend, *rule.fallback)]
            capable = tuple(b for b in chain if b.capabilities.serves(spec))
            among = spec.languages
            language_known = language_known or any(
                b.capabilities.supports(spec.language, "transcribe", among) for b in chain
            )
            task_known = task_known or any(
                b.capabilities.supports(spec.language, spec.task, among) for b in chain
            )
            if capable and capable[0] is chain[0]:
                return capable
        if task_known and spec.word_timestamps:
            raise InvalidRequest(
                "word timestamps are not available for this request", field="word_timestamps"
            )
        if language_known:
            raise UnsupportedTask(f"task {spec.task!r} is not available for this request")
        if spec.language is None and spec.languages:
            raise UnsupportedLanguage(
                f"language detection among {', '.join(spec.languages)} is not available for "
                "this request: name the language",
                field="languages",
            )
        if spec.language is None:
            raise UnsupportedLanguage(
                "language detection is not available for this request: name the language",
                field="language",
            )
        raise UnsupportedLanguage(f"language {spec.language!r} is not supported", field="language")
