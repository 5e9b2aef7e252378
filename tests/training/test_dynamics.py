import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file, save_file

import pipeline.training.dynamics as dt
import pipeline.training.run as training_run
from pipeline.config import parse_params
from pipeline.data.latent_windows import AlternatingBatches, LatentWindows, WindowError
from pipeline.data.stores import read_array
from pipeline.data.streaming import SplitIndex
from pipeline.networks.checkpoint import read_config
from pipeline.networks.dynamics import DynamicsTransformer, dynamics_config
from pipeline.runtime.distributed import Dist, shard
from pipeline.training.optim import NonFiniteLossError
from tests.builders import default_raw_params, write_latents_store

REPO = Path(__file__).resolve().parents[2]


def tiny_raw(**train):
    raw = default_raw_params()  # params.yaml + settings.yaml
    raw["model"].update(dim=32, depth=2, heads=2, kv_heads=1, patch_size=2, num_registers=1, temporal_every=2, k_max=8)
    raw["train"].update(steps=20, seq_len_short=8, seq_len_long=16, batch_size_short=4, batch_size_long=2,
                        long_ratio=0.2, stride=2, lr=3e-3, warmup_steps=10, log_every=5, val_every=1000,
                        checkpoint_every=10, ema_decay=0.9, bootstrap_fraction=0.5, single_frame_fraction=0.25,
                        gapped_ratio=0.0)  # the 40-frame fixture videos are shorter than settings.yaml's gapped_span
    raw["train"].update(train)
    return raw


def tiny_params(**train):
    return parse_params(tiny_raw(**train))


def run(tmp, params, name="run"):
    out = tmp / name
    metrics = dt.train_dynamics(params, latents=tmp / "latents.zarr", out_dir=out / "models" / "dynamics",
                                metrics_path=out / "train.json", live_dir=out / "dvclive")
    return out, metrics


@pytest.fixture
def tmp(tmp_path, latents_store):
    return tmp_path


def test_a_tiny_model_learns_a_tiny_synthetic_sequence(tmp):
    out, metrics = run(tmp, tiny_params(steps=150, log_every=25))
    losses = [float(r.split("\t")[-1]) for r in (out / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]
    assert metrics["best_loss"] <= metrics["final_loss"] + 1e-12 and metrics["final_loss"] == pytest.approx(losses[-1])
    val = metrics["val"]
    assert val["psnr_tau_0.5"] > val["input_psnr_tau_0.5"] + 3  # denoises, not just copies its input
    assert json.loads((out / "train.json").read_text())["val"] == val
    assert metrics["tau_min"] == 0.125 and metrics["tau_max"] == 1.0
    assert metrics["params"] == sum(p.numel() for p in DynamicsTransformer(dynamics_config(
        tiny_params().model, (4, 8, 8), n_actions=3)).parameters())
    assert (out / "dvclive/plots/metrics/train/loss_d/1_8.tsv").is_file()  # per-d losses, d_min = 1/8
    assert (out / "dvclive/plots/metrics/train/batches_per_s.tsv").is_file()


def test_the_model_normalises_latents_by_the_train_split_statistics(tmp):
    import numpy as np

    out, metrics = run(tmp, tiny_params(steps=2))
    store = tmp / "latents.zarr"
    train = np.concatenate([read_array(store, v, "latents").astype(np.float64).ravel() for v in ("v0", "v1", "v2")])
    config = read_config(out / "models" / "dynamics", "dynamics")["config"]
    assert config["latent_mean"] == pytest.approx(train.mean()) and config["latent_std"] == pytest.approx(train.std())
    assert (metrics["latent_mean"], metrics["latent_std"]) == (config["latent_mean"], config["latent_std"])
    assert abs(train.mean()) > 0.05 and abs(train.std() - 1) > 0.05  # the fixture data needs the normalisation


def test_console_shows_step_kind_length_loss_tau_range_and_rate(tmp, capsys):
    run(tmp, tiny_params(steps=5, log_every=5))
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step 5/5")][0]
    assert __import__("re").fullmatch(r"step 5/5 [SL] T=(8|16) loss \d+\.\d{4} Tau: \[0\.\d\d-1\.00\] [\d.]+ batch/s", line)


def killed_then_resumed(tmp, monkeypatch, params, module, name: str, dying):
    """Run with ``module.<name>`` replaced by ``dying(original)`` until it raises KeyboardInterrupt
    (the kill), then run again with the original: (out dir, metrics) of the resumed run."""
    real = getattr(module, name)
    monkeypatch.setattr(module, name, dying(real))
    with pytest.raises(KeyboardInterrupt):
        run(tmp, params, "killed")
    monkeypatch.setattr(module, name, real)
    return run(tmp, params, "killed")


def save_then_die_at(kill_step: int):
    def dying(real_save):
        def save(*args, step, **kwargs):
            real_save(*args, step=step, **kwargs)
            if step == kill_step:
                raise KeyboardInterrupt  # killed right after this checkpoint
        return save
    return dying


def logged_steps(out) -> list[int]:
    return [int(r.split("\t")[0]) for r in (out / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]


def test_resume_after_a_kill_continues_exactly(tmp, monkeypatch):
    params = tiny_params()
    whole, expected = run(tmp, params, "whole")
    killed, resumed = killed_then_resumed(tmp, monkeypatch, params, training_run, "save_checkpoint", save_then_die_at(10))
    assert resumed["resumed_from"] == [10]
    for file in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(whole / "models/dynamics" / file), load_file(killed / "models/dynamics" / file)
        assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("final_loss", "best_loss", "tau_min", "tau_max", "short_batches", "long_batches", "val"):
        assert resumed[key] == expected[key]
    assert logged_steps(killed) == [5, 10, 15, 20]


def files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_run_killed_twice_ends_with_the_checkpoint_and_plots_of_an_uninterrupted_one(tmp, monkeypatch):
    # DVC hashes every file of models/dynamics: any resume trace there would rerun the benchmark.
    params = tiny_params(steps=30, val_every=10)
    whole, expected = run(tmp, params, "whole")
    for kill_step in (10, 20):
        with monkeypatch.context() as m:
            m.setattr(training_run, "save_checkpoint", save_then_die_at(kill_step)(training_run.save_checkpoint))
            with pytest.raises(KeyboardInterrupt):
                run(tmp, params, "killed")
    killed, resumed = run(tmp, params, "killed")
    assert resumed["resumed_from"] == [10, 20] and expected["resumed_from"] == []
    assert json.loads((killed / "train.json").read_text())["resumed_from"] == [10, 20]
    assert files(killed / "models/dynamics") == files(whole / "models/dynamics")
    plots, whole_plots = files(killed / "dvclive/plots/metrics"), files(whole / "dvclive/plots/metrics")
    assert plots.keys() == whole_plots.keys() and "val/psnr_tau_0.5.tsv" in plots
    assert not any(b"\r" in content for content in plots.values())
    timing = "train/batches_per_s.tsv"
    assert {k: v for k, v in plots.items() if k != timing} == {k: v for k, v in whole_plots.items() if k != timing}


def test_a_damaged_checkpoint_is_not_resumed_the_run_starts_fresh_naming_the_file(tmp, monkeypatch, capsys):
    params = tiny_params()
    whole, _ = run(tmp, params, "whole")
    with monkeypatch.context() as m:
        m.setattr(training_run, "save_checkpoint", save_then_die_at(10)(training_run.save_checkpoint))
        with pytest.raises(KeyboardInterrupt):
            run(tmp, params, "killed")
    ema = tmp / "killed/models/dynamics/ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:100])
    killed, resumed = run(tmp, params, "killed")
    assert f"dynamics: not resuming, training from step 0: {ema}: damaged or truncated" in capsys.readouterr().err
    assert resumed["resumed_from"] == []
    assert files(killed / "models/dynamics") == files(whole / "models/dynamics")


def test_a_kill_between_checkpoints_leaves_no_duplicate_plot_rows(tmp, monkeypatch):
    def die_at_step_16(real_check):
        def check(loss, step):
            real_check(loss, step)
            if step == 16:  # past the step-15 log row, before the step-20 checkpoint
                raise KeyboardInterrupt
        return check

    killed, resumed = killed_then_resumed(tmp, monkeypatch, tiny_params(), dt, "check_finite", die_at_step_16)
    assert resumed["resumed_from"] == [10]
    assert logged_steps(killed) == [5, 10, 15, 20]


def test_changed_params_start_fresh_and_clear_the_plots(tmp):
    out, _ = run(tmp, tiny_params())
    (out / "dvclive/plots/metrics/train/stale.tsv").write_text("step\tx\n1\t1\n")
    _, again = run(tmp, tiny_params(lr=1e-3))
    assert again["resumed_from"] == []
    assert not (out / "dvclive/plots/metrics/train/stale.tsv").exists()
    _, finished = run(tmp, tiny_params(lr=1e-3))
    assert finished["resumed_from"] == []  # a finished run is not resumed: it reruns from scratch


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp):
    params = tiny_params(lr=1e30, warmup_steps=0, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match=r"at step 1; stopping"):
        run(tmp, params)
    header = read_config(tmp / "run/models/dynamics", "dynamics")
    assert header["step"] == 1
    assert not list((tmp / "run/models").glob("*.tmp-*"))


def test_validation_in_groups_of_windows_gives_the_metrics_of_all_windows_at_once(tmp):
    from pipeline.metrics import pooled_psnr

    params = tiny_params()
    torch.manual_seed(0)
    model = DynamicsTransformer(dynamics_config(params.model, (4, 8, 8), n_actions=3, latent_mean=0.3,
                                                latent_std=2.0)).eval()
    with torch.no_grad():
        model.patch_out.weight.normal_(0, 0.02)
    val = LatentWindows(SplitIndex.open(tmp / "latents.zarr", "train", "latents"))  # 3 videos, 15 windows of 8
    kw = dict(length=8, taus=(0.5, 0.9), k_max=8, seed=3, device=torch.device("cpu"))
    grouped = [dt.one_step_psnr(model, val, batch_size=b, **kw) for b in (1, 4, 32)]
    # The same windows and noise, every window through the model at once.
    counts = val.count(8, 8)
    latents, acts, poses = val.stack(dt.window_starts(counts, np.arange(counts.sum()), 8), 8)
    x0 = model.normalize(latents)
    eps = torch.randn(x0[:, -1].shape, generator=torch.Generator().manual_seed(3))
    data_range = (x0.max() - x0.min()).item()
    tau = torch.zeros(x0.shape[:2])
    tau[:, -1] = 0.9
    z = x0.clone()
    z[:, -1] = dt.add_noise(x0[:, -1], eps, tau[:, -1])
    with torch.no_grad():
        pred = model(z, tau, torch.full(x0.shape[:2], 1 / 8), acts, poses, memory=x0)[:, -1]
    assert counts.sum() == 15 and list(grouped[0]) == ["persistence_psnr", "psnr_tau_0.5", "input_psnr_tau_0.5",
                                                       "psnr_tau_0.9", "input_psnr_tau_0.9"]
    for metrics in grouped:
        assert metrics == pytest.approx(grouped[-1], abs=1e-4)
    assert grouped[0]["psnr_tau_0.9"] == pytest.approx(pooled_psnr(pred, x0[:, -1], data_range), abs=1e-4)
    assert grouped[0]["persistence_psnr"] == pytest.approx(pooled_psnr(x0[:, -2], x0[:, -1], data_range), abs=1e-4)


def test_windows_longer_than_every_video_name_train_seq_len_long(tmp):
    with pytest.raises(WindowError, match=r"train\.seq_len_long=80: .*longest of 3: 'v0' with 40 frames"):
        run(tmp, tiny_params(seq_len_long=80))


def test_a_run_with_gapped_long_span_batches_trains_on_them_and_counts_them(tmp):
    out, metrics = run(tmp, tiny_params(steps=8, long_ratio=0.25, gapped_ratio=0.5, gapped_span=32, log_every=4,
                                        checkpoint_every=4))
    counts = [metrics[f"{kind}_batches"] for kind in ("short", "long", "gapped")]
    assert counts[2] > 0 and sum(counts) == 8
    assert np.isfinite(metrics["final_loss"])
    with pytest.raises(WindowError, match=r"train\.gapped_span=48: .*longest of 3: 'v0' with 40 frames"):
        run(tmp, tiny_params(gapped_ratio=0.5, gapped_span=48), "too_long")


def test_a_rank_s_loss_on_its_rows_of_a_gapped_batch_is_those_rows_of_the_whole_batch_s(tmp):
    params = tiny_params(gapped_ratio=1.0, long_ratio=0.0, gapped_span=32)
    windows = LatentWindows(SplitIndex.open(tmp / "latents.zarr", "train", "latents"))
    kw = dict(seq_len_short=8, seq_len_long=16, batch_size_short=4, batch_size_long=2, long_ratio=0.0, stride=2,
              seed=params.seed, gapped_ratio=1.0, gapped_span=32)
    torch.manual_seed(0)
    model = DynamicsTransformer(dynamics_config(params.model, (4, 8, 8), n_actions=3)).eval()
    with torch.no_grad():
        model.patch_out.weight.normal_(0, 0.02)
    whole = AlternatingBatches(windows, **kw)[5]
    plan = dt.global_plan(whole, params, 5)
    assert whole.kind == "G" and not torch.equal(whole.times, torch.arange(8).expand(4, 8))
    with torch.no_grad():
        _, expected = dt.local_loss(model, whole, plan, "velocity", torch.device("cpu"))
        parts = []
        for rank in (0, 1):
            rows = shard(4, Dist(rank, 2, 0), "train.batch_size_short")
            mine = AlternatingBatches(windows, rows={"S": rows, "L": rows, "G": rows}, **kw)[5]
            parts.append(dt.local_loss(model, mine, plan.rows(rows), "velocity", torch.device("cpu"))[1])
        untimed = dt.local_loss(model, replace(whole, times=None), plan, "velocity", torch.device("cpu"))[1]
    torch.testing.assert_close(torch.cat(parts), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(untimed, expected, atol=1e-5)  # the times reach the model


# ---------------------------------------------------------------------------------------------
# DDP: two CPU processes (gloo) compute the first-step gradient of the same global batch
# ---------------------------------------------------------------------------------------------
def first_step_grads(model, params, d: Dist) -> dict[str, torch.Tensor]:
    rows = shard(4, d, "train.batch_size_short")
    batches = AlternatingBatches(LatentWindows(SplitIndex.open(params_store(), "train", "latents")), seq_len_short=8,
                                 seq_len_long=16, batch_size_short=4, batch_size_long=2, long_ratio=0.0, stride=2,
                                 seed=params.seed, rows={"S": rows, "L": rows})
    batch = batches[0]  # this rank's rows
    plan = dt.global_plan(batch, params, 0)
    net = torch.nn.parallel.DistributedDataParallel(model) if d.world > 1 else model
    loss, _ = dt.local_loss(net, batch, plan.rows(rows), "velocity", torch.device("cpu"))
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def params_store():
    return Path(os.environ["H4_DDP_DIR"]) / "latents.zarr"


def new_model(params):
    torch.manual_seed(params.seed)
    model = DynamicsTransformer(dynamics_config(params.model, (4, 8, 8), n_actions=3))
    with torch.no_grad():  # non-zero head, so every parameter gets a gradient
        model.patch_out.weight.normal_(0, 0.02)
    return model


def ddp_worker(rank, directory):
    torch.set_num_threads(1)
    os.environ["H4_DDP_DIR"] = directory
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=2)
    params = tiny_params(bootstrap_fraction=0.5, single_frame_fraction=0.5)
    grads = first_step_grads(new_model(params), params, Dist(rank, 2, 0))
    save_file({k: v.contiguous() for k, v in grads.items()}, f"{directory}/grads{rank}.safetensors")
    dist.destroy_process_group()


def test_ddp_with_two_cpu_processes_gives_the_first_step_gradient_of_one_process(tmp, monkeypatch):
    monkeypatch.setenv("H4_DDP_DIR", str(tmp))
    # fork: the workers inherit the imported modules instead of importing torch again
    mp.start_processes(ddp_worker, args=(str(tmp),), nprocs=2, join=True, start_method="fork")
    params = tiny_params(bootstrap_fraction=0.5, single_frame_fraction=0.5)
    single = first_step_grads(new_model(params), params, Dist())
    for rank in (0, 1):
        grads = load_file(tmp / f"grads{rank}.safetensors")
        assert grads.keys() == single.keys()
        for k in single:
            torch.testing.assert_close(grads[k], single[k], rtol=1e-4, atol=1e-6, msg=k)
    assert sum(g.abs().sum() for g in single.values()) > 0


@pytest.mark.slow  # three Python processes import torch: ~20-45 s on the shared 2-core machine
def test_the_stage_relaunches_itself_under_torchrun_and_matches_one_process(tmp):
    work = tmp / "stage"
    (work / "data").mkdir(parents=True)
    write_latents_store(work / "data/latents.zarr")
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_raw(steps=4, nproc_per_node=2, log_every=2)))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((work / "metrics/train.json").read_text())["processes"] == 2
    assert (work / "dvclive/train/plots/metrics/train/loss.tsv").is_file()
    assert proc.stdout.count("step 2/4") == 1  # rank 0 logs alone
    # Two ranks train exactly what one process trains on the same global batches.
    single, _ = run(tmp, tiny_params(steps=4, log_every=2), "single")
    two, one = load_file(work / "models/dynamics/model.safetensors"), load_file(single / "models/dynamics/model.safetensors")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)


def test_the_bf16_autocast_path_of_the_gpu_presets_trains_on_cpu_too(tmp):
    # CPU bf16 autocast runs the same mixed-precision code as CUDA's, so a dtype slip in the
    # model or the objective shows up here, not on the first GPU run.
    out, metrics = run(tmp, tiny_params(steps=60, log_every=20, precision="bf16"))
    losses = [float(r.split("\t")[-1]) for r in (out / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(np.isfinite(v) for v in metrics["val"].values())
