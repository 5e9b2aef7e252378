"""Checkpoints: a directory written atomically, never pickle: config.json ({kind, config, step, extra}),
model.safetensors, ema.safetensors (what inference uses) and, for resuming, train_state.safetensors
(optimizer moments, RNG) + train_state.json (param groups, scalars)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.atomic import atomic_dir

CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or does not fit its model; the message names the file and the fix."""


class NoCheckpointError(CheckpointError):
    """No checkpoint in the directory at all (its config.json is absent): nothing was trained yet."""


HEADER_KEYS = ("kind", "config", "step", "extra")


def redo_advice(directory: str | Path) -> str:
    return f"delete {directory} and rerun `dvc repro` (the stage that writes it trains it again)"


def _damaged(file: Path, reason: str) -> CheckpointError:
    error = CheckpointError(f"{file}: damaged or truncated checkpoint file ({reason}); {redo_advice(file.parent)}")
    error.problem = f"{file}: damaged or truncated ({reason})"  # without the advice
    return error


def _missing(file: Path) -> CheckpointError:
    error = CheckpointError(f"{file}: missing from the checkpoint; {redo_advice(file.parent)}")
    error.problem = f"{file}: missing"
    return error


def read_tensors(file: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; CheckpointError naming the file if missing or unreadable."""
    file = Path(file)
    if not file.is_file():
        raise _missing(file)
    try:
        return load_file(file)
    except Exception as exc:  # SafetensorError (a truncated header or data), OSError
        raise _damaged(file, f"{type(exc).__name__}: {exc}") from exc


def read_json(file: str | Path) -> dict:
    """A checkpoint JSON object; CheckpointError naming the file if missing or not a JSON object."""
    file = Path(file)
    if not file.is_file():
        raise _missing(file)
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise _damaged(file, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise _damaged(file, f"a JSON {type(data).__name__}, not an object")
    return data


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _cpu_state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(
    directory: str | Path,
    *,
    kind: str,
    config: dict,
    model: nn.Module,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    step: int = 0,
    extra: dict | None = None,
    train_extra: dict | None = None,
) -> None:
    """Write a complete checkpoint to `directory`, replacing any previous one atomically.
    `extra` goes to config.json; `train_extra` (with an optimizer) to train_state.json."""
    with atomic_dir(directory) as tmp:
        save_file(_cpu_state(model), tmp / "model.safetensors")
        if ema is not None:
            save_file(_cpu_state(ema), tmp / "ema.safetensors")
        if optimizer is not None:
            tensors, meta = _optimizer_tensors(optimizer)
            tensors["rng.torch"] = torch.get_rng_state()
            save_file(tensors, tmp / "train_state.safetensors")
            meta["scheduler"] = scheduler.state_dict() if scheduler is not None else None
            if train_extra is not None:
                meta["extra"] = train_extra
            (tmp / "train_state.json").write_text(json.dumps(meta))
        (tmp / CONFIG_FILE).write_text(
            json.dumps({"kind": kind, "config": config, "step": step, "extra": extra or {}}, indent=2)
        )


def read_config(directory: str | Path, kind: str) -> dict:
    """The checkpoint's JSON header; NoCheckpointError if absent, CheckpointError if damaged or another kind."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise NoCheckpointError(f"{path}: no checkpoint here (run the stage that trains it first: `dvc repro`)")
    header = read_json(path)
    if missing := [k for k in HEADER_KEYS if k not in header]:
        raise _damaged(path, f"no {', '.join(missing)}")
    if header.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {header.get('kind')!r} checkpoint, expected {kind!r}")
    return header


def state_dict_drift(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Why `state` would not load strictly into `module` (empty: it would): missing and unexpected keys,
    shape mismatches, the first five of each."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]  # fmt: skip

    def first(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

    named = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong))
    return [f"{name} {first(items)}" for name, items in named if items]


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path,
                      error: type[Exception], problem: str) -> None:  # fmt: skip
    """``load_state_dict(strict=True)``, or `error` naming the source file and every drift."""
    drift = state_dict_drift(module, state)
    if drift:
        raise error(f"{source}: {problem}: " + "; ".join(drift))
    module.load_state_dict(state, strict=True)


def load_weights(module: nn.Module, file: str | Path) -> None:
    """Strict load of a safetensors file; CheckpointError listing the drift, or naming a missing/damaged file."""
    file = Path(file)
    load_state_strict(module, read_tensors(file), file, CheckpointError, "does not match the model built from its config")


def load_model(directory: str | Path, kind: str, build: Callable[[dict], nn.Module], *,
               ema: bool = True) -> tuple[nn.Module, dict]:
    """Build the model from the checkpoint's config and load its (EMA) weights strictly."""
    directory = Path(directory)
    header = read_config(directory, kind)
    model = build(header["config"])
    weights = directory / ("ema.safetensors" if ema and (directory / "ema.safetensors").is_file() else "model.safetensors")
    load_weights(model, weights)
    return model, header


def load_training_state(
    directory: str | Path,
    *,
    kind: str,
    model: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[int, dict]:
    """Restore model, EMA, optimizer, schedule and RNG: (step, config's and train state's extras merged).
    Every file is checked first: on a CheckpointError nothing has been loaded."""
    directory = Path(directory)
    header = read_config(directory, kind)
    weights = {"model.safetensors": (model, read_tensors(directory / "model.safetensors"))}
    if ema is not None:
        weights["ema.safetensors"] = (ema, read_tensors(directory / "ema.safetensors"))
    state_file, meta_file = directory / "train_state.safetensors", directory / "train_state.json"
    tensors, meta = read_tensors(state_file), read_json(meta_file)
    if "rng.torch" not in tensors:
        raise _damaged(state_file, "no rng.torch")
    if not isinstance(meta.get("param_groups"), list) or not isinstance(meta.get("scalars"), dict):
        raise _damaged(meta_file, "no param_groups or scalars")
    for name, (module, state) in weights.items():
        if drift := state_dict_drift(module, state):
            raise CheckpointError(f"{directory / name}: does not match the model built from its config: " + "; ".join(drift))
    try:
        _restore_optimizer(optimizer, tensors, meta)
    except (KeyError, ValueError, TypeError) as exc:  # torch's own check of the param groups
        raise CheckpointError(f"{state_file}: the optimizer state does not fit ({exc}); {redo_advice(directory)}") from exc
    for module, state in weights.values():
        module.load_state_dict(state, strict=True)
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    return header["step"], {**header["extra"], **meta.get("extra", {})}


def checkpoint_hash(directory: str | Path) -> str:
    """sha256 over the weights that inference uses and the config: names a checkpoint in stores."""
    directory = Path(directory)
    h = hashlib.sha256()
    for name in (CONFIG_FILE, "ema.safetensors", "model.safetensors"):
        p = directory / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def load_trained(directory: str | Path, kind: str, build: Callable[[dict], nn.Module],
                 device: str | torch.device = "cpu") -> nn.Module:
    """A trained model for inference: built from the checkpoint's config, EMA weights loaded strictly, on
    `device`, eval mode, no gradients (``kind``, ``build``: e.g. ``tokenizer.KIND, build_tokenizer``)."""
    model, _ = load_model(directory, kind, build, ema=True)
    return model.to(device).eval().requires_grad_(False)
