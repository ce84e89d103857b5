"""The Router: ordered config rules that pick the backend (and its fallbacks) for a job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .backend import Backend
from .config import RouteRule
from .errors import UnsupportedLanguage, UnsupportedTask
from .jobs import JobSpec

__all__ = ["Route", "Router"]

Route = tuple[Backend, ...]
"""The backend to try first, then its fallbacks in order: only ones that can serve the job."""


class Router:
    """Routes a :class:`JobSpec` by the first rule that matches it and whose backend can do it.

    A rule matches when each of its conditions (protocol, language, task, key name) is empty or
    contains the job's value. A matching rule whose backend cannot serve the job's language or
    task falls through to the next rule, so that "Google for everything, Whisper for translate"
    is two lines of config.
    """

    def __init__(self, rules: Sequence[RouteRule], backends: Mapping[str, Backend]) -> None:
        self._rules = tuple(rules)
        self._backends = dict(backends)

    def route(self, spec: JobSpec) -> Route:
        """The backends that serve ``spec``, first choice first.

        Raises:
            UnsupportedTask: some matching backend knows the language but none does the task.
            UnsupportedLanguage: no matching backend recognises the language.
        """
        language_known = False
        for rule in self._rules:
            m = rule.match
            if (
                (m.protocol and spec.protocol not in m.protocol)
                or (m.language and spec.language not in m.language)
                or (m.task and spec.task not in m.task)
                or (m.key and spec.caller.key_name not in m.key)
            ):
                continue
            chain = [self._backends[name] for name in (rule.backend, *rule.fallback)]
            capable = tuple(b for b in chain if b.capabilities.supports(spec.language, spec.task))
            language_known = language_known or any(
                b.capabilities.supports(spec.language, "transcribe") for b in chain
            )
            if capable and capable[0] is chain[0]:
                return capable
        if language_known:
            raise UnsupportedTask(f"task {spec.task!r} is not available for this request")
        raise UnsupportedLanguage(f"language {spec.language!r} is not supported")
