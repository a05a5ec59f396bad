"""Print the runtime dependencies declared in pyproject.toml, one per line (a pip requirements file).

The Dockerfile installs these in a layer of their own before the source is copied, so editing the code does
not reinstall the dependencies; tests/test_packaging.py checks the list matches the built wheel's.

    python scripts/requirements.py [pyproject.toml] > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path) -> list[str]:
    with pyproject.open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    return [str(d) for d in dependencies]


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path("pyproject.toml")
    for line in requirements(path):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
