"""Print the runtime dependencies declared in pyproject.toml, one per line (a pip requirements file).

The Dockerfile installs these in a layer of their own before the source is copied, so editing the code does
not reinstall the dependencies; tests/test_packaging.py checks the list matches the built wheel's.

    python scripts/requirements.py [pyproject.toml [EXTRA ...]] > requirements.txt

With EXTRA names (``gcp``), those optional dependencies follow (the image installs ``gcp`` by default: the
Google Cloud integrations, imported only when configured).
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path


def requirements(pyproject: Path, extras: Sequence[str] = ()) -> list[str]:
    """The unconditional dependencies, then each extra's (an extra naming the project itself, as ``dev``
    names ``sre-watchdog[gcp]``, is left out: its own list is what to name)."""
    with pyproject.open("rb") as f:
        project = tomllib.load(f)["project"]
    lines = [str(d) for d in project["dependencies"]]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"no extra {extra!r} in {pyproject} (there are: {', '.join(sorted(optional))})")
        lines += [str(d) for d in optional[extra] if not str(d).startswith(project["name"])]
    return lines


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path("pyproject.toml")
    for line in requirements(path, argv[2:]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
