"""A throwaway git + DVC copy of the project, for tests that run `dvc repro` / `dvc exp run`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAM_FILES = ("params.yaml", "settings.yaml")  # one schema (pipeline/config.py); a key lives in one of them
PROJECT_FILES = ("pyproject.toml", *PARAM_FILES, "dvc.yaml", ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore")
PROJECT_DIRS = ("pipeline", "stages", ".dvc/plots")


REMOVE = object()  # an override value that deletes the key (e.g. a workload tiny recordings cannot hold)


def _deep_merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _leaves(tree: dict, loc: tuple = ()):
    """(key path, value) of every leaf of a nested dict (a non-empty dict is not a leaf)."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*loc, key))
        else:
            yield (*loc, key), value


def _depth(tree: dict, path: tuple) -> int:
    """How many leading keys of `path` the tree holds."""
    for i, key in enumerate(path):
        if not isinstance(tree, dict) or key not in tree:
            return i
        tree = tree[key]
    return len(path)


class ProjectClone:
    """The project's code and params in a fresh git repo; commands run there with this venv's tools."""

    def __init__(self, root: Path):
        self.root = root
        bin_dir = str(Path(sys.executable).parent)  # `python` and `dvc` of the running venv
        self.env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "GIT_TERMINAL_PROMPT": "0"}  # fmt: skip

    def run(self, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def param_files(self) -> dict[str, dict]:
        return {name: yaml.safe_load((self.root / name).read_text()) or {} for name in PARAM_FILES}

    def params(self) -> dict:
        """params.yaml and settings.yaml merged."""
        merged: dict = {}
        for tree in self.param_files().values():
            merged = _deep_merge(merged, tree)
        return merged

    def set_params(self, overrides: dict, commit: bool = True) -> None:
        """Set each leaf of `overrides` (lists are replaced; REMOVE deletes the key) in the file that holds its
        key (params.yaml for a new key, unless settings.yaml holds more of its path), and commit."""
        files = self.param_files()
        for path, value in _leaves(overrides):
            name = max(PARAM_FILES, key=lambda n: _depth(files[n], path))  # ties: params.yaml
            node = files[name]
            for key in path[:-1]:
                node = node.setdefault(key, {})
            if value is REMOVE:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
        for name, tree in files.items():
            (self.root / name).write_text(yaml.safe_dump(tree, sort_keys=False))
        if commit:
            self.commit("params for this test")

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)



def make_project_clone(root: Path) -> ProjectClone:
    """A committed copy of pyproject/params/dvc.yaml/.dvc config, pipeline/ and stages/ (no data)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for d in PROJECT_DIRS:
        if (PROJECT_ROOT / d).is_dir():
            shutil.copytree(PROJECT_ROOT / d, root / d, ignore=ignore)
    for f in PROJECT_FILES:
        if (PROJECT_ROOT / f).exists():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / f, root / f)
    clone = ProjectClone(root)
    clone.run("git", "init", "-q", "-b", "main")
    clone.run("git", "config", "user.email", "tests@example.com")
    clone.run("git", "config", "user.name", "tests")
    clone.commit("project under test")
    return clone


# Every stage at a size that runs in about a minute on 2 cores: the end-to-end, play and fault tests.
TINY = {
    "download": {"recorder": {"episodes": 3, "max_frames": 60}},
    "extract": {"size": 32},
    "tokenizer": {"steps": 12, "batch_size": 8, "base_channels": 8, "warmup_steps": 2,
                  "val_every": 6, "checkpoint_every": 6, "val_frames": 16},
    "tokenize": {"batch_size": 64},
    "model": {"dim": 32, "depth": 2, "heads": 2, "kv_heads": 1, "temporal_every": 1, "k_max": 4},
    "train": {"steps": 8, "seq_len_short": 4, "seq_len_long": 8, "batch_size_short": 2,
              "batch_size_long": 1, "warmup_steps": 2, "log_every": 4, "val_every": 4, "checkpoint_every": 4,
              "gapped_span": 16},
    # 60-frame recordings hold no return of the revisit workload (the explorer is away 100+ frames)
    "benchmark": {"workloads": {"short": {"context": 3, "predict": 3}, "long": {"context": 10, "predict": 4},
                                "revisit": REMOVE},
                  "budgets": {"full": None, "tight": 2}, "n_clips": 2, "sampling_steps": 2, "media_clips": 1},
}
