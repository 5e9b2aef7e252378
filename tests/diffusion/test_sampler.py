import pytest
import torch

from pipeline.diffusion.sampler import ShortcutEulerSampler


def test_taus_walk_the_grid_of_the_shortcut_step():
    s = ShortcutEulerSampler(4)
    assert s.d == 0.25
    assert s.taus() == [1.0, 0.75, 0.5, 0.25]


def test_each_call_gets_tau_and_d_and_the_last_prediction_is_returned():
    calls = []
    target = torch.full((2, 3), 0.7)

    def denoise(z, tau, d):
        calls.append((tau, d))
        return target + tau  # changes with tau: only the last call (tau = d) is returned

    out = ShortcutEulerSampler(8).sample(denoise, (2, 3), torch.Generator().manual_seed(0))
    assert [c[1] for c in calls] == [0.125] * 8
    assert [c[0] for c in calls] == pytest.approx([1 - i / 8 for i in range(8)])
    assert torch.allclose(out, target + 0.125)


def test_euler_step_moves_along_the_straight_path_of_a_perfect_denoiser():
    # With the true x0, z_tau = (1 - tau) x0 + tau eps stays on the path: every call sees it.
    x0 = torch.linspace(-1, 1, 6).view(2, 3)
    g = torch.Generator().manual_seed(3)
    eps = torch.randn((2, 3), generator=torch.Generator().manual_seed(3))
    seen = []

    def denoise(z, tau, d):
        seen.append(torch.allclose(z, (1 - tau) * x0 + tau * eps, atol=1e-6))
        return x0

    out = ShortcutEulerSampler(4).sample(denoise, (2, 3), g)
    assert all(seen) and torch.allclose(out, x0)


def test_same_generator_seed_same_sample():
    def denoise(z, tau, d):
        return 0.5 * z

    a = ShortcutEulerSampler(4).sample(denoise, (4,), torch.Generator().manual_seed(1))
    b = ShortcutEulerSampler(4).sample(denoise, (4,), torch.Generator().manual_seed(1))
    c = ShortcutEulerSampler(4).sample(denoise, (4,), torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_context_corruption_mixes_in_seeded_noise():
    x = torch.ones(1000)
    s = ShortcutEulerSampler(4, tau_ctx=0.1)
    y = s.corrupt(x, torch.Generator().manual_seed(0))
    eps = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y, 0.9 * x + 0.1 * eps)
    assert torch.equal(ShortcutEulerSampler(4, tau_ctx=0.0).corrupt(x, torch.Generator()), x)


@pytest.mark.parametrize("steps", [0, 3, 6])
def test_steps_must_be_a_power_of_two(steps):
    with pytest.raises(ValueError, match="power of two"):
        ShortcutEulerSampler(steps)


def test_tau_ctx_must_be_below_one():
    with pytest.raises(ValueError, match="tau_ctx"):
        ShortcutEulerSampler(4, tau_ctx=1.0)
