import math

import pytest
import torch

from pipeline.diffusion.objective import (
    HISTORY_WINDOW,
    add_noise,
    bootstrap_target,
    gapped_history,
    ramp_weight,
    sample_plan,
    sample_step_sizes,
    sample_taus,
    shortcut_forcing_loss,
    shortcut_step,
)
from pipeline.networks.dynamics import DynamicsTransformer
from tests.builders import dynamics_config


def tiny_model() -> DynamicsTransformer:
    torch.manual_seed(0)
    model = DynamicsTransformer(dynamics_config((4, 8, 8), n_actions=3, dim=32, depth=2, heads=2, kv_heads=1, k_max=8,
                                                patch_size=2, num_registers=2, temporal_every=2, mlp_ratio=4.0,
                                                logit_softcap=50.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_noising_convention_tau_zero_is_clean_and_one_is_noise():
    x, eps = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    assert torch.equal(add_noise(x, eps, torch.zeros(2, 3)), x)
    assert torch.equal(add_noise(x, eps, torch.ones(2, 3)), eps)


def test_ramp_weight_favours_clean_frames():
    assert ramp_weight(torch.tensor([0.0, 0.5, 1.0])).tolist() == pytest.approx([1.0, 0.55, 0.1])


def test_sampler_step_with_the_true_x_moves_along_the_noising_path():
    x, eps = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    tau, d = torch.full((2, 3), 0.75), torch.full((2, 3), 0.25)
    torch.testing.assert_close(shortcut_step(add_noise(x, eps, tau), x, tau, d), add_noise(x, eps, tau - d))


def test_bootstrap_target_equals_two_explicit_half_steps_of_the_sampler():
    model = tiny_model()
    z = torch.randn(2, 5, 4, 8, 8, generator=gen())
    d = torch.tensor([[0.5, 0.25, 1.0, 0.5, 0.25]] * 2)
    tau = torch.tensor([[0.5, 0.75, 1.0, 1.0, 0.25]] * 2)
    actions = torch.randint(-1, 3, (2, 5), generator=gen(1))
    target = bootstrap_target(model, z, tau, d, actions, space="velocity")
    # Two explicit half steps of the sampler with the same (causal, whole-sequence) model.
    with torch.no_grad():
        x1 = model(z, tau, d / 2, actions)
        z_mid = shortcut_step(z, x1, tau, d / 2)
        x2 = model(z_mid, tau - d / 2, d / 2, actions)
        z_end = shortcut_step(z_mid, x2, tau - d / 2, d / 2)
    # One step of size d toward the student's target lands where the two half steps land.
    torch.testing.assert_close(shortcut_step(z, target, tau, d), z_end, rtol=1e-5, atol=1e-5)
    assert not target.requires_grad
    torch.testing.assert_close(bootstrap_target(model, z, tau, d, actions, space="x"), (x1 + x2) / 2)
    with pytest.raises(ValueError, match="bootstrap_space"):
        bootstrap_target(model, z, tau, d, actions, space="eps")


def test_bootstrap_rows_draw_d_uniformly_over_the_coarse_levels_and_flow_rows_use_d_min():
    k_max = 16
    bootstrap = torch.tensor([True] * 500 + [False] * 500)
    d = sample_step_sizes((1000, 20), k_max, bootstrap, gen())
    assert torch.all(d[500:] == 1 / k_max)
    levels = torch.round(-torch.log2(d[:500])).long().flatten()
    counts = torch.bincount(levels, minlength=5).float() / levels.numel()
    assert counts[4] == 0  # d_min is never a bootstrap step
    assert torch.allclose(counts[:4], torch.full((4,), 0.25), atol=0.01)  # uniform in log2(d)


def test_tau_lies_on_the_grid_of_d_uniformly_from_d_to_one():
    d = torch.tensor([0.25] * 40000 + [1.0] * 1000)
    tau = sample_taus(d, gen())
    assert torch.all(tau[40000:] == 1.0)
    quarter = tau[:40000]
    assert set(quarter.unique().tolist()) == {0.25, 0.5, 0.75, 1.0}
    for v in (0.25, 0.5, 0.75, 1.0):
        assert abs((quarter == v).float().mean().item() - 0.25) < 0.01


def test_plan_gives_bootstrap_targets_to_an_exact_share_of_rows_and_single_frames_at_their_rate():
    plans = [sample_plan((8, 4, 4, 8, 8), k_max=8, bootstrap_fraction=0.25, single_frame_fraction=0.3,
                         generator=gen(s)) for s in range(300)]
    assert all(int(p.bootstrap.sum()) == 2 for p in plans)
    assert abs(torch.cat([p.independent for p in plans]).float().mean().item() - 0.3) < 0.03
    p = plans[0]
    assert torch.all((p.d > 1 / 8) == p.bootstrap[:, None])
    assert torch.all(p.tau >= p.d) and torch.all(p.tau <= 1)
    one = sample_plan((8, 4, 4, 8, 8), k_max=1, bootstrap_fraction=1.0, single_frame_fraction=0.0, generator=gen())
    assert not one.bootstrap.any() and torch.all(one.d == 1)  # nothing coarser than d = 1 to distil


def test_loss_is_the_ramp_weighted_error_against_x0_or_the_bootstrap_target():
    model = tiny_model()
    x0 = torch.randn(4, 3, 4, 8, 8, generator=gen(2))
    actions = torch.randint(-1, 3, (4, 3), generator=gen(3))
    plan = sample_plan(tuple(x0.shape), k_max=8, bootstrap_fraction=0.5, single_frame_fraction=0.0, generator=gen(4))
    loss, err = shortcut_forcing_loss(model, x0, actions, plan)
    z = add_noise(x0, plan.eps, plan.tau)
    with torch.no_grad():
        pred = model(z, plan.tau, plan.d, actions)
        target = x0.clone()
        rows = plan.bootstrap
        target[rows] = bootstrap_target(model, z[rows], plan.tau[rows], plan.d[rows], actions[rows])
    expected = (pred - target).pow(2).mean(dim=(2, 3, 4))
    torch.testing.assert_close(err, expected, rtol=1e-5, atol=1e-6)
    assert math.isclose(loss.item(), (ramp_weight(plan.tau) * expected).mean().item(), rel_tol=1e-5)
    loss.backward()
    assert model.patch_in.weight.grad is not None


def test_a_gapped_batch_s_frame_times_reach_the_student_and_the_bootstrap_teacher():
    model = tiny_model()
    x0 = torch.randn(4, 3, 4, 8, 8, generator=gen(2))
    actions = torch.randint(-1, 3, (4, 3), generator=gen(3))
    plan = sample_plan(tuple(x0.shape), k_max=8, bootstrap_fraction=0.5, single_frame_fraction=0.0, generator=gen(4))
    times = torch.tensor([[0, 50, 51], [7, 8, 9], [3, 90, 91], [0, 1, 2]])
    loss, err = shortcut_forcing_loss(model, x0, actions, plan, times=times)
    z = add_noise(x0, plan.eps, plan.tau)
    with torch.no_grad():
        pred = model(z, plan.tau, plan.d, actions, visible=plan.visible, memory=x0, times=times)
        target = x0.clone()
        rows = plan.bootstrap
        target[rows] = bootstrap_target(model, z[rows], plan.tau[rows], plan.d[rows], actions[rows],
                                        visible=plan.visible[rows], memory=x0[rows], times=times[rows])
        plain_teacher = bootstrap_target(model, z[rows], plan.tau[rows], plan.d[rows], actions[rows],
                                         visible=plan.visible[rows], memory=x0[rows])
    assert not torch.allclose(target[rows], plain_teacher, atol=1e-4)  # the teacher sees the times too
    expected = (pred - target).pow(2).mean(dim=(2, 3, 4))
    torch.testing.assert_close(err, expected, rtol=1e-5, atol=1e-6)
    assert math.isclose(loss.item(), (ramp_weight(plan.tau) * expected).mean().item(), rel_tol=1e-5)
    # frames at 0..T-1 are the default; a shift of a row's times changes nothing (RoPE is relative)
    default, _ = shortcut_forcing_loss(model, x0, actions, plan)
    at_arange, _ = shortcut_forcing_loss(model, x0, actions, plan, times=torch.arange(3).expand(4, 3))
    shifted, _ = shortcut_forcing_loss(model, x0, actions, plan, times=torch.arange(3).expand(4, 3) + 120)
    assert at_arange.item() == pytest.approx(default.item(), rel=1e-6)
    assert shifted.item() == pytest.approx(default.item(), rel=1e-4)
    assert loss.item() != pytest.approx(default.item(), rel=1e-4)


def test_history_dropout_rows_see_the_newest_frames_some_older_ones_and_themselves():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        visible = gapped_history(12, g)
        assert torch.all(visible.diagonal()) and not torch.any(visible.triu(1))  # itself, nothing later
        assert torch.all(visible[torch.arange(1, 12), torch.arange(0, 11)])  # always the frame just before
        older = visible[11, :3]  # what the last frame keeps of the oldest frames: a per-row draw, same for all
        assert all(torch.equal(visible[i, :3], older) for i in range(HISTORY_WINDOW + 3, 12))


def test_plans_mix_causal_single_frame_and_gapped_rows_and_context_frames():
    plans = [sample_plan((8, 16, 2, 4, 4), k_max=16, bootstrap_fraction=0.25, single_frame_fraction=0.2,
                         generator=torch.Generator().manual_seed(s), context_fraction=0.5, history_dropout=0.5)
             for s in range(40)]
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    kinds = {"single": 0, "causal": 0, "gapped": 0}
    small = torch.cat([plan.tau[~plan.bootstrap].flatten() <= 2 / 16 for plan in plans]).float().mean()
    assert 0.5 < small < 0.62  # context frames (half), plus flow frames drawn at 1/16 or 2/16 (1/8 of the rest)
    for plan in plans:
        for row in range(8):
            v = plan.visible[row]
            if plan.independent[row]:
                assert torch.equal(v, torch.eye(16, dtype=torch.bool))
                kinds["single"] += 1
            else:
                kinds["causal" if torch.equal(v, causal) else "gapped"] += 1
        assert torch.all(plan.tau[plan.bootstrap] >= plan.d[plan.bootstrap])  # bootstrap rows stay on their grid
    assert kinds["gapped"] > 0.3 * sum(kinds.values()) and kinds["single"] > 0 and kinds["causal"] > 0


def test_without_context_frames_and_dropout_a_plan_draws_what_it_always_drew():
    a = sample_plan((4, 8, 2, 4, 4), k_max=16, bootstrap_fraction=0.25, single_frame_fraction=0.2,
                    generator=torch.Generator().manual_seed(3))
    b = sample_plan((4, 8, 2, 4, 4), k_max=16, bootstrap_fraction=0.25, single_frame_fraction=0.2,
                    generator=torch.Generator().manual_seed(3), context_fraction=0.0, history_dropout=0.0)
    for x, y in zip(a._tensors(), b._tensors()):
        assert torch.equal(x, y)
