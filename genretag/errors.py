"""The errors genretag raises on purpose, and the exit status each one means.

Every error a user can cause or meet (a file that does not decode, a tag that
cannot be written, a model that is not there, a download that does not
verify) is a `GenretagError`: its message is one line for the user and its
`exit_code` is the status the CLI ends with (1: something failed at run time,
2: a usage error, nothing was changed; see README "Exit codes"). The CLI
catches `GenretagError` once, in `genretag.cli.app.main`; library callers can
catch it, or one of the subclasses, the same way.

Imports nothing from genretag, so every module (torch-free ones included) can
raise these; genretag imports them from here. A module that raises one holds it
too (`genretag.audio.decode.AudioError` is this `AudioError`); a name that a
module only re-exported (`genretag.store.index.ModelError`) is deprecated there.
"""

from __future__ import annotations

#: How long a message may get before `one_line` cuts it.
MAX_MESSAGE = 200


class GenretagError(Exception):
    """An expected failure with a one-line message and the CLI exit status it maps to."""

    exit_code: int = 1

    def __init__(self, msg: str = "", exit_code: int | None = None) -> None:
        super().__init__(msg)
        if exit_code is not None:
            self.exit_code = exit_code


class AudioError(GenretagError):
    """A file that cannot be decoded."""


class FingerprintError(GenretagError):
    """A file whose bytes cannot be read to fingerprint its audio payload."""


class TagError(GenretagError):
    """A file whose genre tag cannot be read or written."""


class DatasetError(GenretagError):
    """A dataset folder or split that cannot be used (the command's input is wrong: a usage error)."""

    exit_code = 2


class ConfigError(GenretagError):
    """Settings (a --params file) that do not fit a config: not an object, an unknown key, a wrong type."""

    exit_code = 2


class ModelError(GenretagError):
    """A model that cannot be found or loaded."""


class HubError(ModelError):
    """A model that cannot be downloaded or installed."""

    @property
    def code(self) -> int:
        """The exit status (the name `HubError` had before the common root)."""
        return self.exit_code


class OfflineError(HubError):
    """The network (or the server) could not be reached: callers may fall back."""


class ChecksumError(HubError):
    """Downloaded weights whose sha256 is not the expected one (the download is deleted)."""


def one_line(exc: BaseException, limit: int = MAX_MESSAGE) -> str:
    """The first line of an exception's message (its type name when empty), at most `limit` characters.

    For wrapping third-party errors (a decoder's, mutagen's, torch's) whose
    messages can run to many lines, into one line of a `GenretagError`.
    """
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


#: Top-level modules that only an extra installs -> that extra (pyproject.toml's optional-dependencies).
EXTRA_OF_MODULE = {"optuna": "train", "matplotlib": "train", "scipy": "train",
                   "distributed": "dask", "dask": "dask", "beets": "beets"}


class MissingExtraError(GenretagError):
    """An optional dependency is not installed: one line naming the `pip install` that adds it."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"this needs {module}, which is not installed: pip install 'genretag[{extra}]'", 2)
        self.module, self.extra = module, extra


def missing_extra(exc: ImportError) -> MissingExtraError | None:
    """The `MissingExtraError` for an ImportError of an extra's module (None for any other import)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    return MissingExtraError(top, extra) if extra else None
