"""Detect the PyPI ``watchdog`` (filesystem events) distribution sharing our import name."""

from __future__ import annotations

import importlib.metadata


class NameClashError(ImportError):
    """Raised when the filesystem-events ``watchdog`` distribution is installed next to sre-watchdog."""


def check_for_name_clash() -> None:
    try:
        other = importlib.metadata.distribution("watchdog")
    except importlib.metadata.PackageNotFoundError:
        return
    raise NameClashError(
        f"The PyPI package 'watchdog' {other.version} (filesystem events) is installed in this environment "
        "and shares the import name 'watchdog' with sre-watchdog. Install sre-watchdog in its own virtual "
        "environment or container: python3 -m venv .venv && .venv/bin/pip install sre-watchdog"
    )
