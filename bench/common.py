"""What the benchmark scripts share: where the repository and the shared data are, and writing a report."""

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
