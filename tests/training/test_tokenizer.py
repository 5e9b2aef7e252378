import csv
import json

import numpy as np
import pytest
import torch

from pipeline.config import parse_params
from pipeline.data.stores import StoreError, store_identity
from pipeline.metrics import psnr
from pipeline.networks.checkpoint import load_trained
from pipeline.networks.tokenizer import build_tokenizer
from pipeline.training.tokenizer import RunningRMS, tokenizer_fingerprint
from pipeline.training.tokenizer import train_tokenizer as train_tokenizer_into
from tests.builders import default_raw_params, params_section, write_frames_store

TINY = params_section("tokenizer", base_channels=8, latent_channels=4, downsample=2, steps=30, batch_size=8, lr=3e-3,
                      warmup_steps=5, val_every=10, checkpoint_every=10, val_frames=8)


def train_tokenizer(tok, seed, frames, out_dir, live_dir, on_step=None):
    """A run writing its metrics beside its checkpoint directory (<out_dir>.json)."""
    return train_tokenizer_into(tok, seed, frames=frames, out_dir=out_dir, live_dir=live_dir,
                                metrics_path=out_dir.with_suffix(".json"), on_step=on_step)


class Kill(Exception):
    """Stands in for the process being killed mid-run."""


def curve(live_dir, name="train/loss"):
    with (live_dir / "plots" / "metrics" / f"{name}.tsv").open() as f:
        return [(int(r["step"]), float(r[name.split("/")[-1]])) for r in csv.DictReader(f, delimiter="\t")]


def test_tokenizer_overfits_a_tiny_clip_and_beats_persistence(frames_store, tmp_path):
    params = TINY.model_copy(update={"steps": 150, "val_every": 50, "checkpoint_every": 50})
    metrics = train_tokenizer(params, 0, frames_store, tmp_path / "tok", tmp_path / "live")
    model = load_trained(tmp_path / "tok", "tokenizer", build_tokenizer)
    import zarr

    clip = torch.from_numpy(zarr.open_group(str(frames_store))["v0"]["frames"][:]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        train_psnr = psnr(model.decode(model.encode(clip)), clip).mean().item()
    assert train_psnr > 27, train_psnr
    assert metrics["val"]["psnr"] > metrics["persistence"]["psnr"] + 3, metrics
    assert metrics["latent_shape"] == [4, 16, 16] and metrics["compression_ratio"] == pytest.approx(3.0)
    assert {s for s, _ in curve(tmp_path / "live", "val/psnr")} == {50, 100, 150}
    losses = [v for _, v in curve(tmp_path / "live")]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_resume_after_a_kill_continues_the_step_count_and_the_loss_curve(frames_store, tmp_path):
    straight = train_tokenizer(TINY, 0, frames_store, tmp_path / "a", tmp_path / "live_a")

    def kill_at_25(step, logs):
        if step == 25:
            raise Kill

    with pytest.raises(Kill):
        train_tokenizer(TINY, 0, frames_store, tmp_path / "b", tmp_path / "live_b", on_step=kill_at_25)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["step"] == 20
    steps_seen = []
    resumed = train_tokenizer(TINY, 0, frames_store, tmp_path / "b", tmp_path / "live_b",
                              on_step=lambda s, _: steps_seen.append(s))
    assert steps_seen == list(range(21, 31))
    assert curve(tmp_path / "live_b") == curve(tmp_path / "live_a")  # same steps, same values, no duplicates
    assert resumed["val"] == straight["val"]


def test_a_resumed_run_writes_the_checkpoint_files_and_plots_of_an_uninterrupted_one(frames_store, tmp_path):
    params = TINY.model_copy(update={"steps": 20})
    straight = train_tokenizer(params, 0, frames_store, tmp_path / "a", tmp_path / "live_a")

    def kill_at_15(step, logs):
        if step == 15:
            raise Kill

    with pytest.raises(Kill):
        train_tokenizer(params, 0, frames_store, tmp_path / "b", tmp_path / "live_b", on_step=kill_at_15)
    resumed = train_tokenizer(params, 0, frames_store, tmp_path / "b", tmp_path / "live_b")
    assert resumed["resumed_from"] == [10] and straight["resumed_from"] == []
    for out in ("a", "b"):  # the stage's metrics file, written by the library
        assert json.loads((tmp_path / f"{out}.json").read_text())["val"] == straight["val"]

    def files(directory):
        return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}

    assert files(tmp_path / "b") == files(tmp_path / "a")  # config.json, weights, train_state.*
    plots = files(tmp_path / "live_b" / "plots")
    assert plots == files(tmp_path / "live_a" / "plots") and "metrics/val/psnr.tsv" in plots
    assert not any(b"\r" in content for content in plots.values())


def test_changed_params_or_data_start_fresh(frames_store, tmp_path):
    short = TINY.model_copy(update={"steps": 10})
    train_tokenizer(short, 0, frames_store, tmp_path / "tok", tmp_path / "live")
    first = []
    train_tokenizer(short.model_copy(update={"lr": 1e-3, "steps": 20}), 0, frames_store, tmp_path / "tok", tmp_path / "live",
                    on_step=lambda s, _: first.append(s))
    assert first[0] == 1  # a different run: trained from scratch ...
    assert [s for s, _ in curve(tmp_path / "live")] == [10, 20]  # ... and the old curve is gone
    other = write_frames_store(tmp_path / "other.zarr", seed=1)
    assert store_identity(other) != store_identity(frames_store)
    assert tokenizer_fingerprint(short, 0, store_identity(other)) != tokenizer_fingerprint(short, 0, store_identity(frames_store))
    raw = default_raw_params()
    a, b = parse_params(raw), parse_params({**raw, "tokenize": {"batch_size": 7, "nproc_per_node": 1}})
    assert tokenizer_fingerprint(a.tokenizer, a.seed, "x") == tokenizer_fingerprint(b.tokenizer, b.seed, "x")


def test_missing_val_split_is_named(tmp_path):
    store = write_frames_store(tmp_path / "f.zarr", videos=(("v0", "train", 8), ("v1", "test", 8)))
    with pytest.raises(StoreError, match="no 'val' videos"):
        train_tokenizer(TINY, 0, store, tmp_path / "tok", tmp_path / "live")
    assert not (tmp_path / "tok").exists()


def test_running_rms_tracks_scale():
    rms = RunningRMS(decay=0.9)
    assert rms.update(torch.tensor(3.0)) == pytest.approx(3.0)
    for _ in range(200):
        value = rms.update(torch.tensor(0.5))
    assert value == pytest.approx(0.5, rel=1e-3)


def test_validation_runs_every_val_every_steps_even_off_the_logging_grid(frames_store, tmp_path):
    params = TINY.model_copy(update={"steps": 45, "val_every": 15, "checkpoint_every": 45})
    train_tokenizer(params, 0, frames_store, tmp_path / "tok", tmp_path / "live")
    assert [s for s, _ in curve(tmp_path / "live", "val/psnr")] == [15, 30, 45]
    assert [s for s, _ in curve(tmp_path / "live")] == [10, 20, 30, 40, 45]
