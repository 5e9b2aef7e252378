"""The official FAR checkpoints (``guyuchao/FAR_Models``): where they are, what they build.

Files keep their official relative paths under ``benchmark.far.weights_dir`` (else ``$FAR_WEIGHTS_DIR``)
or come from the hub when allowed; loading is strict (``load_state_dict(strict=True)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipeline.networks.checkpoint import CheckpointError, load_state_strict, read_tensors
from pipeline.networks.far import FAR, FARConfig, far_config

HUB_REPO = "guyuchao/FAR_Models"
ENV_VAR = "FAR_WEIGHTS_DIR"

# options/model_cfg/dcae/model_8x_c32_config.json of the reference (both official DCAEs use it)
DCAE_8X_C32 = {
    "in_channels": 3,
    "latent_channels": 32,
    "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [128, 256, 512, 512],
    "decoder_block_out_channels": [128, 256, 512, 512],
    "encoder_layers_per_block": [0, 4, 8, 2],
    "decoder_layers_per_block": [0, 5, 10, 2],
    "encoder_qkv_multiscales": [[], [], [], []],
    "decoder_qkv_multiscales": [[], [], [], []],
    "upsample_block_type": "pixel_shuffle",
    "downsample_block_type": "pixel_unshuffle",
    "decoder_norm_types": ["batch_norm", "batch_norm", "batch_norm", "rms_norm"],
    "decoder_act_fns": ["relu", "relu", "relu", "silu"],
    "scaling_factor": 0.2889,
}
# options/model_cfg/far/scheduler_config.json: FlowMatchEulerDiscreteScheduler defaults otherwise
SCHEDULER_CONFIG = {"num_train_timesteps": 1000}


@dataclass(frozen=True)
class FarVariant:
    """One benchmarkable FAR: transformer + DCAE checkpoints and the frame size they expect."""

    name: str
    transformer: FARConfig
    transformer_file: str
    dcae_file: str
    dcae_config: dict = field(default_factory=lambda: dict(DCAE_8X_C32), hash=False)
    resolution: int = 64


VARIANTS: dict[str, FarVariant] = {
    "FAR_B_UCF101": FarVariant(
        name="FAR_B_UCF101",
        transformer=far_config("B"),
        transformer_file="short_video_prediction/FAR_B_UCF101_Uncond64-381d295f.pth",
        dcae_file="dcae/DCAE_UCF101_Res64-9da18dcf.pth",
    ),
    "FAR_B_Long_DMLab": FarVariant(
        name="FAR_B_Long_DMLab",
        transformer=far_config("B", long=True, condition_cfg={"type": "action", "num_action_classes": 4}),
        transformer_file="long_video_prediction/FAR_B_Long_DMLab_Action64-c09441dc.pth",
        dcae_file="dcae/DCAE_DMLab_Res64-17035ae5.pth",
    ),
}


class FarWeightsError(CheckpointError):
    """An official checkpoint does not fit the network (or is unreadable); the message names it."""


class MissingFarWeightError(FarWeightsError, FileNotFoundError):
    """An official checkpoint is neither in the weights directory nor downloadable."""


def weights_dtype(device: torch.device | str) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def locate(filename: str, weights_dir: str | Path | None = None, allow_hub_download: bool = False) -> Path:
    """Path of an official file: ``weights_dir`` (else $FAR_WEIGHTS_DIR) / filename, else the hub."""
    root = weights_dir if weights_dir is not None else os.environ.get(ENV_VAR)
    tried = []
    if root:
        path = Path(root).expanduser() / filename
        if path.is_file():
            return path
        tried.append(str(path))
    if allow_hub_download:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id=HUB_REPO, filename=filename))
        except Exception as e:  # offline, gated, renamed: say which file and why
            raise MissingFarWeightError(f"FAR weight {filename!r}: download from {HUB_REPO} failed: {e}") from e
    where = ", ".join(tried) if tried else f"no weights directory (benchmark.far.weights_dir and ${ENV_VAR} unset)"
    raise MissingFarWeightError(
        f"FAR weight {filename!r} not found (looked in: {where}). Put the official files of {HUB_REPO} under "
        f"benchmark.far.weights_dir or ${ENV_VAR} with their original relative paths, or set "
        "benchmark.far.allow_hub_download: true on a machine that is online."
    )


def _unreadable(path: Path, exc: BaseException) -> FarWeightsError:
    reason = str(exc).split(". ")[0]  # torch's zip errors go on for several sentences
    return FarWeightsError(f"{path}: damaged or truncated FAR checkpoint ({type(exc).__name__}: {reason}); "
                           f"delete it and put the official file of {HUB_REPO} there again")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch (``weights_only``) checkpoint; FarWeightsError if unreadable."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return read_tensors(path)
        except CheckpointError as exc:
            raise _unreadable(path, exc.__cause__ or exc) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, refused global: unreadable either way
        raise _unreadable(path, exc) from exc
    # a few official-style wrappers: {"state_dict": ...}, {"model": ...}, {"ema": ...}
    for wrapper in ("state_dict", "model", "ema"):
        if isinstance(state, dict) and set(state) == {wrapper}:
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FarWeightsError(f"{path}: not a state_dict of tensors")
    return state


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file, keys and shapes."""
    load_state_strict(module, state, source, FarWeightsError, f"does not fit {type(module).__name__}")


def load_transformer(variant: FarVariant, weights_dir=None, allow_hub_download=False, device="cpu") -> FAR:
    path = locate(variant.transformer_file, weights_dir, allow_hub_download)
    model = FAR(variant.transformer)
    load_strict(model, read_state_dict(path), path)
    return model.to(device=device, dtype=weights_dtype(device)).eval().requires_grad_(False)


def load_dcae(variant: FarVariant, weights_dir=None, allow_hub_download=False, device="cpu"):
    from diffusers import AutoencoderDC

    path = locate(variant.dcae_file, weights_dir, allow_hub_download)
    vae = AutoencoderDC(**variant.dcae_config)
    load_strict(vae, read_state_dict(path), path)
    return vae.to(device=device, dtype=weights_dtype(device)).eval().requires_grad_(False)
