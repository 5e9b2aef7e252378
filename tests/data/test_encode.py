import numpy as np
import pytest
import torch
import zarr

from pipeline.data.encode import encode_store
from pipeline.data.stores import StoreError, list_videos, read_poses
from pipeline.networks.checkpoint import checkpoint_hash, load_trained, save_checkpoint
from pipeline.networks.tokenizer import build_tokenizer, tokenizer_config
from pipeline.training.optim import EMA
from tests.builders import params_section, write_frames_store


@pytest.fixture
def tokenizer_dir(tmp_path):
    torch.manual_seed(0)
    config = tokenizer_config(params_section("tokenizer", base_channels=8, latent_channels=4, downsample=4), 32)
    model = build_tokenizer(config)
    save_checkpoint(tmp_path / "tok", kind="tokenizer", config=config, model=model, ema=EMA(model, 0.9), step=1)
    return tmp_path / "tok"


def encode(frames, tokenizer_dir, out, batch_size):
    """encode_store with the trained tokenizer of tokenizer_dir."""
    model = load_trained(tokenizer_dir, "tokenizer", build_tokenizer)
    return encode_store(frames, model, checkpoint_hash(tokenizer_dir), out, batch_size=batch_size)


def test_latents_store_follows_the_contract(frames_store, tokenizer_dir, tmp_path):
    out = tmp_path / "latents.zarr"
    summary = encode(frames_store, tokenizer_dir, out, batch_size=5)
    assert summary == {"videos": 4, "frames": 96, "latent_shape": [4, 8, 8]}
    src, dst = zarr.open_group(str(frames_store)), zarr.open_group(str(out))
    assert dst.attrs["tokenizer_hash"] == checkpoint_hash(tokenizer_dir)
    assert dst.attrs["latent_shape"] == [4, 8, 8]
    assert sorted(dst.group_keys()) == sorted(src.group_keys())
    model = load_trained(tokenizer_dir, "tokenizer", build_tokenizer)
    for vid in src.group_keys():
        lat, frames = dst[vid]["latents"], src[vid]["frames"]
        assert lat.dtype == np.float16 and lat.shape == (frames.shape[0], 4, 8, 8)
        assert lat.chunks[0] == frames.chunks[0] and lat.shards[0] == frames.shards[0]
        assert dict(dst[vid].attrs) == dict(src[vid].attrs)
        np.testing.assert_array_equal(dst[vid]["actions"][:], src[vid]["actions"][:])
        with torch.no_grad():
            expected = model.encode(torch.from_numpy(frames[:]).permute(0, 3, 1, 2).float() / 255)
        np.testing.assert_allclose(lat[:].astype(np.float32), expected.numpy(), atol=1e-3)
    assert [v.split for v in list_videos(out, array="latents")] == ["train", "train", "val", "test"]


def test_tokenize_is_deterministic(frames_store, tokenizer_dir, tmp_path):
    encode(frames_store, tokenizer_dir, tmp_path / "a.zarr", batch_size=16)
    encode(frames_store, tokenizer_dir, tmp_path / "b.zarr", batch_size=16)
    a, b = zarr.open_group(str(tmp_path / "a.zarr")), zarr.open_group(str(tmp_path / "b.zarr"))
    for vid in a.group_keys():
        assert np.array_equal(a[vid]["latents"][:], b[vid]["latents"][:])


def test_size_mismatch_is_named_and_leaves_no_store(tokenizer_dir, tmp_path):
    store = write_frames_store(tmp_path / "big.zarr", size=48)
    out = tmp_path / "latents.zarr"
    with pytest.raises(StoreError, match=r"frames are 48x48, the tokenizer was trained on 32x32"):
        encode(store, tokenizer_dir, out, batch_size=8)
    assert not out.exists()


def test_crash_midway_keeps_the_previous_store_and_no_partial_one(frames_store, tokenizer_dir, tmp_path, monkeypatch):
    out = tmp_path / "latents.zarr"
    encode(frames_store, tokenizer_dir, out, batch_size=8)
    before = zarr.open_group(str(out))["v0"]["latents"][:]
    import pipeline.data.encode as tokenize_module

    calls = {"n": 0}
    real = tokenize_module.encode_frames

    def crash_on_third_batch(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(tokenize_module, "encode_frames", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="killed"):
        encode(frames_store, tokenizer_dir, out, batch_size=8)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("latents.zarr")] == ["latents.zarr"]
    assert np.array_equal(zarr.open_group(str(out))["v0"]["latents"][:], before)


def test_poses_are_copied_beside_the_latents_like_actions(tokenizer_dir, tmp_path):
    frames = write_frames_store(tmp_path / "frames.zarr", poses_for=("v1", "v3"))
    out = tmp_path / "latents.zarr"
    encode(frames, tokenizer_dir, out, batch_size=8)
    assert [(v.id, v.has_poses, v.has_actions) for v in list_videos(out, array="latents")] == [
        ("v0", False, True), ("v1", True, True), ("v2", False, True), ("v3", True, True)]  # fmt: skip
    for vid in ("v1", "v3"):
        np.testing.assert_array_equal(read_poses(out, vid), read_poses(frames, vid))
        assert zarr.open_group(str(out))[vid].attrs["pose_fields"] == ["x", "y", "heading_deg"]
    assert read_poses(out, "v0") is None
