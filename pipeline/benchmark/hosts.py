"""The host, device and run description of a params file (shared by the stage, try_policy and
bench/bench_rollout.py)."""

from __future__ import annotations

import torch

from pipeline.paths import DYNAMICS, TOKENIZER
from pipeline.training.checkpoint import NoCheckpointError


def benchmark_device(params, dist=None) -> torch.device:
    """The device rollouts run on (a rank's own GPU among several processes, ``dist``); on CPU
    capped at ``benchmark.cpu_threads`` threads (per-frame ops are small: more threads cost
    more than they give)."""
    from pipeline.training.device import pick_device

    device = dist.device if dist is not None and dist.world > 1 else pick_device()
    if device.type == "cpu" and params.benchmark.cpu_threads:
        torch.set_num_threads(params.benchmark.cpu_threads)
    return device


def build_host(params, device: torch.device | str = "cpu"):
    """The RolloutHost named by ``benchmark.host``: FAR (``pipeline.far.host.load_far_host``) or
    this pipeline's tokenizer and dynamics checkpoints."""
    bench = params.benchmark
    if bench.host == "far":
        from pipeline.far.host import load_far_host

        return load_far_host(bench.far, device)
    from pipeline.rollout.pipeline_host import PipelineHost

    for directory, stage in ((TOKENIZER, "train_tokenizer"), (DYNAMICS, "train")):
        if not (directory / "config.json").is_file():
            raise NoCheckpointError(f"{directory}: no checkpoint (run `dvc repro {stage}` first)")
    return PipelineHost.load(TOKENIZER, DYNAMICS, bench.sampling_steps, bench.tau_ctx, device,
                             copy_gate_shift=bench.copy_gate_shift)


def run_info(params, device) -> dict:
    """What a result depends on besides the policy: stored with the metrics so that try_policy
    can tell whether its numbers are paired with the stage's."""
    bench = params.benchmark
    info = {"host": bench.host, "protocol": bench.protocol, "sampling_steps": bench.sampling_steps, "n_clips": bench.n_clips,
            "n_seeds": len(bench.seeds), "device": torch.device(device).type}
    if bench.host == "pipeline":
        from pipeline.training.checkpoint import checkpoint_hash

        info["checkpoints"] = {"tokenizer": checkpoint_hash(TOKENIZER)[:16], "dynamics": checkpoint_hash(DYNAMICS)[:16]}
    return info
