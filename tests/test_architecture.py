"""The structure, read from the imports: the layer contracts in pyproject.toml hold, and no module imports
itself back through a chain (a cycle). Both are checked on the code as it is, not on a picture of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is a dev dependency: pip install -e '.[dev]'"
    done = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("watchdog", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if graph.chain_exists(importer=imported, imported=importer):
                chain = graph.find_shortest_chain(importer=imported, imported=importer)
                cycles.append(f"{importer} -> {' -> '.join(chain or ())}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_package_says_what_lives_there() -> None:
    """Each package's __init__ docstring says what it holds (and what it may import)."""
    missing = [
        str(init.relative_to(ROOT))
        for init in sorted((ROOT / "watchdog").rglob("__init__.py"))
        if not init.read_text().lstrip().startswith('"""')
    ]
    assert not missing, f"packages without a docstring: {missing}"
