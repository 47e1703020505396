"""Command-line interface: a thin layer over the genretag API.

Each command lives in its own module and registers itself on `app`.
"""

from genretag.cli.app import app, main
from genretag.cli import classify as _classify  # noqa: F401  (registers the command)

for _mod in ("tag", "models", "train"):
    try:
        __import__(f"genretag.cli.{_mod}")
    except ModuleNotFoundError as _e:  # a command module not written yet
        if _e.name != f"genretag.cli.{_mod}":
            raise

__all__ = ["app", "main"]
