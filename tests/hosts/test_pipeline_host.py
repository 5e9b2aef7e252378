"""The host over this pipeline's tokenizer + dynamics transformer (small, randomly initialised)."""

import pytest
import torch

from pipeline.diffusion.sampler import ShortcutEulerSampler
from pipeline.hosts.pipeline_host import PipelineHost
from pipeline.networks.dynamics import build_dynamics, config_dict
from pipeline.networks.pose_memory import PoseStats
from pipeline.networks.tokenizer import build_tokenizer, tokenizer_config
from pipeline.rollout.api import FrameInfo
from pipeline.rollout.loop import run_rollout
from pipeline.rollout.policies import load_policy
from tests.builders import dynamics_config

DYN = config_dict(dynamics_config((4, 8, 8), n_actions=3, dim=32, depth=4, heads=2, kv_heads=2, patch_size=2,
                                  num_registers=1, temporal_every=2, k_max=16, mlp_ratio=4.0, logit_softcap=50.0))


@pytest.fixture(scope="module")
def host():
    torch.manual_seed(0)
    tok = build_tokenizer(tokenizer_config(dict(arch="conv", latent_channels=4, downsample=4, base_channels=8,
                                                patch_size=8), 32))
    dyn = build_dynamics(DYN)
    torch.nn.init.normal_(dyn.patch_out.weight, std=0.2)  # the zero-initialised head would predict 0
    return PipelineHost(tok, dyn, ShortcutEulerSampler(4, tau_ctx=0.1))


def context(n=5):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(7)).tanh()


def roll(host, policy, mode, max_frames=None, n_predict=4, seed=0, actions=(0, 1, 2, 1, 0, 2, 1, 0, 2)):
    return run_rollout(host, load_policy(policy), context(), n_predict, max_frames=max_frames, mode=mode,
                       generator=torch.Generator().manual_seed(seed), actions=list(actions))


def test_kv_equals_recompute_under_full_history(host):
    a = roll(host, "full_history", "recompute")
    b = roll(host, "full_history", "kv")
    assert a.generated.abs().mean() > 0.05  # a real, non-trivial prediction
    torch.testing.assert_close(a.generated, b.generated, atol=2e-5, rtol=1e-4)


def test_kv_mode_evicts_and_differs_from_recompute_once_frames_leave(host):
    a = roll(host, "recent_window", "recompute")
    b = roll(host, "recent_window", "kv")
    assert a.kept_per_step == b.kept_per_step == [2, 2, 2, 2]
    # kv: a survivor's keys in the second temporal layer were computed while the evicted frame
    # was present; recompute re-runs the survivors without it
    assert not torch.allclose(a.generated, b.generated, atol=1e-5)


def test_retained_bytes_are_real_latent_and_kv_bytes(host):
    rec = roll(host, "full_history", "recompute", max_frames=3)
    kv = roll(host, "full_history", "kv", max_frames=3)
    assert rec.peak_retained_bytes == 3 * 4 * 8 * 8 * 4  # three float32 latents
    tokens = (8 // 2) ** 2 + 1 + 2  # spatial + register + noise + action tokens of one frame
    per_frame = 2 * 2 * tokens * 2 * (32 // 2) * 4  # 2 temporal layers x (k, v) x tokens x kv_heads x head_dim x fp32
    assert kv.peak_retained_bytes == 3 * per_frame


def test_same_seed_same_generation(host):
    a = roll(host, "packcache", "kv", max_frames=4, seed=3)
    b = roll(host, "packcache", "kv", max_frames=4, seed=3)
    assert torch.equal(a.generated, b.generated)


def test_actions_condition_the_generation(host):
    a = roll(host, "full_history", "kv", n_predict=1, actions=(0, 0, 0, 0, 0, 0))
    b = roll(host, "full_history", "kv", n_predict=1, actions=(0, 0, 0, 0, 0, 2))
    assert not torch.allclose(a.generated, b.generated)


def test_encode_decode_shapes(host):
    pixels = torch.rand(2, 3, 32, 32)
    z = host.encode(pixels)
    assert z.shape == (2, 4, 8, 8)
    out = host.decode(z)
    assert out.shape == pixels.shape and 0 <= out.min() and out.max() <= 1


def test_unknown_mode_is_rejected(host):
    with pytest.raises(ValueError, match="unknown rollout mode 'cache'"):
        host.start("cache", torch.Generator())


def test_more_sampling_steps_than_k_max_is_rejected(host):
    with pytest.raises(ValueError, match="k_max"):
        PipelineHost(host.tokenizer, host.dynamics, ShortcutEulerSampler(32))


def test_recompute_equals_the_harness_style_full_forward_per_denoising_call(host):
    """The shared context pass gives what re-running history + noisy frame at every call gives."""
    ctx, acts = context(4), [0, 2, 1, 1, 2]
    session = host.start("recompute", torch.Generator().manual_seed(5))
    for t, (x, a) in enumerate(zip(ctx, acts)):
        session.append(x, FrameInfo(t, a))
    got = session.generate(FrameInfo(len(ctx), acts[-1]))

    g = torch.Generator().manual_seed(5)
    noisy_ctx = torch.stack([host.sampler.corrupt(x, g) for x in ctx])[None]
    n = len(ctx)

    def denoise(z, tau, d):
        x = torch.cat([noisy_ctx, z[None, None]], dim=1)
        taus = torch.tensor([[host.sampler.tau_ctx] * n + [tau]])
        ds = torch.tensor([[host.d_context] * n + [d]])
        return host.dynamics(x, taus, ds, torch.tensor([acts]))[0, -1]

    want = host.sampler.sample(denoise, tuple(ctx.shape[1:]), g)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def posed_host():
    torch.manual_seed(0)
    tok = build_tokenizer(tokenizer_config(dict(arch="conv", latent_channels=4, downsample=4, base_channels=8,
                                                patch_size=8), 32))
    config = dynamics_config((4, 8, 8), n_actions=3, dim=32, depth=4, heads=2, kv_heads=2, patch_size=2,
                             num_registers=1, temporal_every=2, k_max=16, mlp_ratio=4.0, logit_softcap=50.0,
                             poses=PoseStats((0.0, 0.0), 1.0))
    dyn = build_dynamics(config_dict(config))
    torch.nn.init.normal_(dyn.patch_out.weight, std=0.2)
    return PipelineHost(tok, dyn, ShortcutEulerSampler(4, tau_ctx=0.1))


def posed_roll(host, policy, mode, poses, max_frames=None):
    return run_rollout(host, load_policy(policy), context(), 4, max_frames=max_frames, mode=mode,
                       generator=torch.Generator().manual_seed(0), actions=[0, 1, 2, 1, 0, 2, 1, 0, 2], poses=poses)


def test_a_posed_host_reports_its_models_pose_bias_rate_and_an_unposed_one_none(posed_host, host):
    assert posed_host.pose_bias_rate == posed_host.dynamics.config.pose_bias > 0
    assert host.pose_bias_rate is None


def test_with_poses_kv_equals_recompute_under_full_history_and_the_poses_matter(posed_host):
    poses = [(float(t), 0.0, 22.5 * t) for t in range(9)]
    a = posed_roll(posed_host, "full_history", "recompute", poses)
    b = posed_roll(posed_host, "full_history", "kv", poses)
    torch.testing.assert_close(a.generated, b.generated, atol=2e-5, rtol=1e-4)
    turned = [(float(t), 0.0, 22.5 * t + 180.0) for t in range(9)]
    assert not torch.allclose(a.generated, posed_roll(posed_host, "full_history", "kv", turned).generated, atol=1e-4)


def test_recompute_runs_the_kept_frames_at_their_own_times(posed_host):
    """Under a budget that evicts the middle, recompute gives the kept frames their clip times:
    the same frames re-indexed 0..n-1 would give another prediction."""
    poses = [(float(t), 0.0, 0.0) for t in range(9)]
    session = posed_host.start("recompute", torch.Generator().manual_seed(1))
    for t in (0, 3, 4):
        session.append(context()[t], FrameInfo(t, 0, poses[t]))
    gapped = session.generate(FrameInfo(5, 1, poses[5]))
    session = posed_host.start("recompute", torch.Generator().manual_seed(1))
    for i, t in enumerate((0, 3, 4)):
        session.append(context()[t], FrameInfo(i, 0, poses[t]))
    reindexed = session.generate(FrameInfo(3, 1, poses[5]))
    assert not torch.allclose(gapped, reindexed, atol=1e-4)


@pytest.mark.parametrize("mode", ["recompute", "kv"])
def test_attention_mass_is_each_retained_frames_share_of_the_final_call(posed_host, mode):
    session = posed_host.start(mode, torch.Generator().manual_seed(0))
    assert session.attention_mass() is None
    poses = [(0.0, 0.0, 0.0), (0.0, 0.0, 180.0), (0.0, 0.0, 90.0)]
    for t in range(3):
        session.append(context()[t], FrameInfo(t, 0, poses[t]))
    session.generate(FrameInfo(3, 1, (0.0, 0.0, 180.0)))
    shares = session.attention_mass()
    assert len(shares) == 3 and all(0 <= s <= 1 for s in shares) and sum(shares) < 1  # the rest: itself
    assert shares[1] > shares[0] and shares[1] > shares[2]  # the frame seen from the same pose


def test_the_two_modes_report_the_same_attention_mass_under_full_history(posed_host):
    reports = []
    for mode in ("recompute", "kv"):
        session = posed_host.start(mode, torch.Generator().manual_seed(0))
        for t in range(3):
            session.append(context()[t], FrameInfo(t, 0, (float(t), 0.0, 0.0)))
        session.generate(FrameInfo(3, 1, (3.0, 0.0, 0.0)))
        reports.append(session.attention_mass())
    assert reports[0] == pytest.approx(reports[1], abs=1e-5)


def test_without_the_attention_signal_the_host_reports_none_and_generates_the_same_frame(posed_host):
    quiet = PipelineHost(posed_host.tokenizer, posed_host.dynamics, posed_host.sampler, attention_signal=False)
    frames = []
    for host in (posed_host, quiet):
        session = host.start("kv", torch.Generator().manual_seed(0))
        for t in range(3):
            session.append(context()[t], FrameInfo(t, 0, (float(t), 0.0, 0.0)))
        frames.append(session.generate(FrameInfo(3, 1, (3.0, 0.0, 0.0))))
        reported = session.attention_mass()
    assert reported is None
    assert torch.allclose(frames[0], frames[1], atol=1e-5)
