"""Stage `fingerprint`: hash each stage's code (its `stages/` module and the library modules it imports)
and settings.yaml sections into fingerprints/<stage>.txt, which the stage depends on: DVC reruns
exactly what an edit affects, with one `dvc exp show` column a stage (docs/stages.md, Reruns)."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from pipeline import paths
from pipeline.atomic import atomic_dir
from pipeline.config import SETTINGS_FILE

# Every stage imports these; fingerprinting them would rerun the whole pipeline on a schema edit
# (pipeline/config.py validates every stage's params before it works, so an edit there cannot
# change a result silently).
SHARED_MODULES = frozenset({"pipeline/__init__.py", "pipeline/atomic.py", "pipeline/config.py",
                           "pipeline/paths.py",
                           "pipeline/runtime/__init__.py", "pipeline/runtime/errors.py"})

# stage -> (the module its `cmd` runs, the sections of settings.yaml it reads). dvc.yaml lists the
# same stages, and their params.yaml keys from the same sections (tests/test_dvc_project.py checks).
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "download": ("stages.download", ("seed", "download")),
    "extract": ("stages.extract", ("seed", "extract")),
    "train_tokenizer": ("stages.train_tokenizer", ("seed", "tokenizer")),
    "tokenize": ("stages.tokenize_frames", ("tokenize",)),
    "train": ("stages.train", ("seed", "model", "train")),
    "benchmark": ("stages.benchmark", ("seed", "benchmark")),
    "report": ("stages.report", ()),
}

OUT_DIR = paths.FINGERPRINTS

# The FAR host's code and settings (benchmark.far) count for the benchmark only when params.yaml
# selects that host (benchmark.host: far); otherwise the stage never imports them (the host is
# built lazily), and an edit of these files must not rerun it.
FAR_CODE = frozenset({"pipeline/hosts/far_host.py", "pipeline/hosts/far_weights.py", "pipeline/networks/far.py",
                      "pipeline/data/dmlab.py"})


def module_path(module: str, root: Path) -> Path | None:
    """The file of a dotted module name under `root` (a module file or a package's __init__.py)."""
    base = root / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path, seen: set[str] | None = None) -> set[str]:
    """The `pipeline` modules a file imports, transitively, as root-relative posix paths."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "pipeline"]
        else:
            continue
        for name in names:
            module = module_path(name, root)
            if module is None:
                continue  # `from pipeline.x import some_function`: the function, not a module
            rel = module.relative_to(root).as_posix()
            if rel not in seen:
                seen.add(rel)
                imported_modules(module, root, seen)
    return seen


def code_of(stage: str, root: Path = Path("."), host: str = "pipeline") -> list[str]:
    """The files a stage runs, sorted: its stages/ module and the library modules that imports, less
    SHARED_MODULES (and FAR_CODE unless ``host`` is "far")."""
    module = module_path(STAGES[stage][0], root)
    if module is None:
        raise FileNotFoundError(f"stage {stage}: no module {STAGES[stage][0]} under {root}")
    files = {module.relative_to(root).as_posix()} | (imported_modules(module, root) - SHARED_MODULES)
    return sorted(f for f in files if host == "far" or f not in FAR_CODE)


def stage_settings(stage: str, settings: dict, host: str = "pipeline") -> dict:
    """The settings.yaml sections a stage reads (benchmark.far only with the FAR host)."""
    out = {section: settings[section] for section in STAGES[stage][1] if section in settings}
    if host != "far" and isinstance(out.get("benchmark"), dict):
        out["benchmark"] = {k: v for k, v in out["benchmark"].items() if k != "far"}
    return out


def fingerprint(stage: str, settings: dict, root: Path = Path("."), host: str = "pipeline") -> str:
    """The text of fingerprints/<stage>.txt: a line per code file (sha256) and per settings section
    (canonical JSON), so that a diff of two fingerprints says what changed."""
    lines = [f"# stage {stage}: the code it runs and its settings.yaml sections (written by stage fingerprint)"]
    for rel in code_of(stage, root, host):
        lines.append(f"code {rel} {hashlib.sha256((root / rel).read_bytes()).hexdigest()}")
    for section, values in stage_settings(stage, settings, host).items():
        lines.append(f"settings {section} {json.dumps(values, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def write_fingerprints(settings: dict, out_dir: str | Path = OUT_DIR, root: Path = Path("."),
                       host: str = "pipeline") -> dict[str, str]:
    """Write fingerprints/<stage>.txt for every stage (atomically, as one directory); returns them.
    ``host``: params.yaml's benchmark.host."""
    texts = {stage: fingerprint(stage, settings, root, host) for stage in STAGES}
    with atomic_dir(out_dir) as tmp:
        for stage, text in texts.items():
            (tmp / f"{stage}.txt").write_text(text)
    return texts


def settings_tree(root: Path = Path(".")) -> dict:
    """settings.yaml as written (validated with params.yaml by the stage before this is called)."""
    from pipeline.config import read_param_files

    return read_param_files(root / "params.yaml").get(SETTINGS_FILE, {})
