"""The figures every benchmark reports, in one shape (bench-results.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def figure(  # noqa: PLR0917 - one positional per column of the table
    name: str,
    value: float | None,
    unit: str,
    baseline: str,
    target: str | None = None,
    met: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One entry: what was measured, against what, and the target if any."""
    return {"name": name, "value": value, "unit": unit, "baseline": baseline, "target": target, "met": met, **extra}


def write(path: Path, figures: list[dict[str, Any]], **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"figures": figures, **extra}, indent=2) + "\n")
