"""What the benchmark scripts share: where the repository and the shared data are, a `--variant`'s
spec, and writing a report."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# ../shared/data next to the checkout (or next to the folder of worktrees holding it)
DEFAULT_DATA = next((d / "shared" / "data" for d in (REPO.parent, REPO.parent.parent)
                     if (d / "shared" / "data" / "gtzan").is_dir()), REPO.parent / "shared" / "data")
DEFAULT_SOURCE = DEFAULT_DATA / "gtzan"


def write_report(path: Path, report: dict) -> None:
    """`report` as indented JSON at `path` (its folder made), and a line saying so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def variant(spec: str) -> tuple[str, dict, list[str]]:
    """A `--variant` spec, 'label:NAME=VALUE --opt value' -> (label, environment, classify options).

    A variant that sets PYTHONPATH (another checkout) also gets PYTHONSAFEPATH=1: `python -m genretag`
    runs from the repository root, which would otherwise come first on the path."""
    label, _, rest = spec.partition(":")
    env, opts = {}, []
    for item in rest.split():
        if "=" in item and not item.startswith("-"):
            k, v = item.split("=", 1)
            env[k] = v
        else:
            opts.append(item)
    if "PYTHONPATH" in env:
        env.setdefault("PYTHONSAFEPATH", "1")
    return label or "default", env, opts
