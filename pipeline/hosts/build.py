"""The host, device and run description of a params file (shared by the stage, try_policy and
bench/bench_rollout.py)."""

from __future__ import annotations

import torch

from pipeline.networks.checkpoint import NoCheckpointError
from pipeline.paths import DYNAMICS, TOKENIZER


def benchmark_device(params, dist=None) -> torch.device:
    """The device rollouts run on (a rank's own GPU under ``dist``); on CPU, at most
    ``benchmark.cpu_threads`` threads (per-frame ops are small)."""
    from pipeline.runtime.device import pick_device

    device = dist.device if dist is not None and dist.world > 1 else pick_device()
    if device.type == "cpu" and params.benchmark.cpu_threads:
        torch.set_num_threads(params.benchmark.cpu_threads)
    return device


def build_host(params, device: torch.device | str = "cpu"):
    """The RolloutHost named by ``benchmark.host``: FAR (``pipeline.hosts.far_host.load_far_host``) or
    this pipeline's tokenizer and dynamics checkpoints."""
    bench = params.benchmark
    if bench.host == "far":
        from pipeline.hosts.far_host import load_far_host

        return load_far_host(bench.far, device)
    from pipeline.hosts.pipeline_host import PipelineHost

    for directory, stage in ((TOKENIZER, "train_tokenizer"), (DYNAMICS, "train")):
        if not (directory / "config.json").is_file():
            raise NoCheckpointError(f"{directory}: no checkpoint (run `dvc repro {stage}` first)")
    return PipelineHost.load(TOKENIZER, DYNAMICS, bench.sampling_steps, bench.tau_ctx, device,
                             copy_gate_shift=bench.copy_gate_shift)


def run_info(params, device) -> dict:
    """What a result depends on besides the policy (stored with the metrics: try_policy checks
    that its numbers are paired with the stage's)."""
    bench = params.benchmark
    info = {"host": bench.host, "protocol": bench.protocol, "sampling_steps": bench.sampling_steps, "n_clips": bench.n_clips,
            "n_seeds": len(bench.seeds), "device": torch.device(device).type}
    if bench.host == "pipeline":
        from pipeline.networks.checkpoint import checkpoint_hash

        info["checkpoints"] = {"tokenizer": checkpoint_hash(TOKENIZER)[:16], "dynamics": checkpoint_hash(DYNAMICS)[:16]}
    return info
