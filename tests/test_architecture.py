"""The library's packages import one way: each may use the ones listed before it, never after.

    config, atomic, paths, fingerprint  (flat, shared)
    runtime -> data -> metrics -> networks -> diffusion -> training -> rollout -> hosts -> benchmark -> report -> play
"""

import ast
from pathlib import Path

from tests.project_clone import PROJECT_ROOT

ORDER = ["runtime", "data", "metrics", "networks", "diffusion", "training", "rollout", "hosts", "benchmark", "report", "play"]
FLAT = {"config", "atomic", "paths", "fingerprint"}
MAX_FLAT_MODULES = 5


def imported_packages(path: Path) -> set[str]:
    """The pipeline packages (or flat modules) a file imports, TYPE_CHECKING imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("pipeline."))
    return found


def test_every_package_imports_only_packages_before_it_and_the_flat_modules():
    wrong = []
    for package in ORDER:
        allowed = FLAT | set(ORDER[: ORDER.index(package) + 1])
        for path in sorted((PROJECT_ROOT / "pipeline" / package).rglob("*.py")):
            wrong += [f"{path.relative_to(PROJECT_ROOT)} imports pipeline.{p}" for p in imported_packages(path) - allowed]
    assert wrong == []


def test_the_flat_modules_import_only_each_other_and_few_modules_stay_flat():
    flat = sorted(p for p in (PROJECT_ROOT / "pipeline").glob("*.py") if p.name != "__init__.py")
    assert {p.stem for p in flat} == FLAT and len(flat) <= MAX_FLAT_MODULES
    for path in flat:
        assert imported_packages(path) <= FLAT, path


def test_every_package_of_the_library_is_in_the_order():
    packages = {p.name for p in (PROJECT_ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ORDER)
