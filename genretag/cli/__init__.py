"""Command-line interface: a thin layer over the genretag API.

Each command lives in its own module and registers itself on `app`;
torch is imported only by the commands that run a model.
"""

from genretag.cli import classify, models, report, tag, train, transfer  # noqa: F401  (register commands)
from genretag.cli.app import app, main

__all__ = ["app", "main"]
