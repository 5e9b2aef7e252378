"""Locating and strictly loading the official FAR checkpoints (small stand-in modules; no network)."""

import pytest
import torch
from torch import nn

from pipeline.hosts.far_weights import (
    VARIANTS,
    FarWeightsError,
    MissingFarWeightError,
    load_strict,
    locate,
    read_state_dict,
    weights_dtype,
)
from pipeline.networks.far import far_config

NAME = "short_video_prediction/FAR_B_UCF101_Uncond64-381d295f.pth"


def put(root, name=NAME, obj=None):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj if obj is not None else {"w": torch.ones(2)}, path)
    return path


def test_weights_dir_param_wins_over_the_environment(tmp_path, monkeypatch):
    param_dir, env_dir = tmp_path / "param", tmp_path / "env"
    put(param_dir), put(env_dir)
    monkeypatch.setenv("FAR_WEIGHTS_DIR", str(env_dir))
    assert locate(NAME, param_dir) == param_dir / NAME
    assert locate(NAME, None) == env_dir / NAME


def test_missing_file_error_names_the_file_the_place_and_the_remedies(tmp_path, monkeypatch):
    monkeypatch.delenv("FAR_WEIGHTS_DIR", raising=False)
    with pytest.raises(MissingFarWeightError) as err:
        locate(NAME, tmp_path)
    msg = str(err.value)
    assert NAME in msg and str(tmp_path / NAME) in msg and "FAR_WEIGHTS_DIR" in msg and "allow_hub_download" in msg
    with pytest.raises(FileNotFoundError, match=r"FAR_WEIGHTS_DIR unset"):
        locate(NAME, None)


def test_hub_download_failure_names_the_repository_and_file(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("FAR_WEIGHTS_DIR", raising=False)
    with pytest.raises(MissingFarWeightError, match=r"dcae/DCAE_DMLab_Res64-17035ae5.pth.*guyuchao/FAR_Models"):
        locate(VARIANTS["FAR_B_Long_DMLab"].dcae_file, None, allow_hub_download=True)


def test_strict_loading_names_missing_unexpected_and_mismatched_keys(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    good = model.state_dict()
    bad = {"0.weight": torch.zeros(4, 5), "0.bias": good["0.bias"], "1.weight": good["1.weight"],
           "extra": torch.ones(1)}
    with pytest.raises(FarWeightsError) as err:
        load_strict(model, bad, tmp_path / "ckpt.pth")
    msg = str(err.value)
    assert "ckpt.pth: does not fit Sequential" in msg and "missing keys 1.bias" in msg and "unexpected keys extra" in msg
    assert "0.weight: file (4, 5) vs model (4, 3)" in msg
    fresh = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    load_strict(fresh, good, "ok")
    torch.testing.assert_close(fresh[0].weight, model[0].weight)


def test_checkpoints_are_read_plain_or_wrapped_and_non_tensors_are_refused(tmp_path):
    sd = {"a": torch.arange(3.0)}
    for i, obj in enumerate([sd, {"state_dict": sd}, {"ema": sd}]):
        torch.testing.assert_close(read_state_dict(put(tmp_path, f"c{i}.pth", obj))["a"], sd["a"])
    with pytest.raises(FarWeightsError, match="not a state_dict"):
        read_state_dict(put(tmp_path, "x.pth", {"a": [1, 2]}))


@pytest.mark.parametrize("name", ["w.pth", "w.safetensors"])
def test_a_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, name):
    from safetensors.torch import save_file

    from pipeline.networks.checkpoint import CheckpointError

    path = tmp_path / name
    save_file({"a": torch.ones(64)}, path) if name.endswith(".safetensors") else torch.save({"a": torch.ones(64)}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=f"^{path}: damaged or truncated FAR checkpoint .*; delete it and put"):
        read_state_dict(path)


def test_bf16_on_cuda_fp32_on_cpu():
    assert weights_dtype("cuda") == torch.bfloat16 and weights_dtype("cpu") == torch.float32


def test_presets_follow_the_reference_registry():
    sizes = {name: (c.num_layers, c.num_attention_heads) for name, c in
             {"B": far_config("B"), "M": far_config("M"), "L": far_config("L"), "XL": far_config("XL")}.items()}
    assert sizes == {"B": (12, 12), "M": (12, 16), "L": (24, 16), "XL": (28, 18)}
    assert far_config("M", long=True).context_patch_size == 4
    with pytest.raises(ValueError, match="FAR_L_Long"):
        far_config("L", long=True)
