import pytest
import torch

from pipeline.training.optim import (
    EMA,
    NonFiniteLossError,
    Optimization,
    build_optimizer,
    check_finite,
    warmup_cosine,
)
from tests.builders import params_section


def test_warmup_then_cosine_decay_to_min_ratio():
    opt = build_optimizer(torch.nn.Linear(2, 2), lr=1.0, weight_decay=0.0)
    sched = warmup_cosine(opt, warmup=4, total=14, min_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and len(decayed["params"]) == 1
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3


def test_non_finite_loss_raises_with_step():
    check_finite(torch.tensor(1.0), 3)
    with pytest.raises(NonFiniteLossError, match="at step 7"):
        check_finite(torch.tensor(float("nan")), 7)


def test_the_ema_warm_up_is_an_option_of_the_ema():
    model = torch.nn.Linear(2, 2)
    warm, plain = EMA(model, 0.999, warmup=True), EMA(model, 0.999)
    assert [warm.decay_at(s) for s in (0, 1, 10)] == [1 / 10, 2 / 11, 11 / 20]
    assert warm.decay_at(100_000) == 0.999 == plain.decay_at(0) == plain.decay_at(5)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = warm.module.weight.clone()
    warm.update(model, step=0)  # decay 0.1: 90% of the way to the model
    torch.testing.assert_close(warm.module.weight, before + 0.9 * (model.weight - before))


def test_one_optimization_step_is_backward_clip_adamw_schedule_and_ema():
    def model_and_loss():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        return model, lambda: model(torch.ones(2, 4)).pow(2).sum() * 100  # large gradients: clipped

    loop = params_section("train", lr=0.01, warmup_steps=2, steps=10, grad_clip=0.5, ema_decay=0.9)
    model, loss = model_and_loss()
    opt = Optimization(model, loop, ema_warmup=True)
    norms = [opt.step(loss(), step) for step in range(3)]

    ref, ref_loss = model_and_loss()
    ema, adamw = EMA(ref, 0.9, warmup=True), build_optimizer(ref, 0.01, loop.weight_decay)
    schedule = warmup_cosine(adamw, 2, 10)
    for step in range(3):
        adamw.zero_grad()
        ref_loss().backward()
        assert torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5) == norms[step] > 0.5
        adamw.step()
        schedule.step()
        ema.update(ref, step)
    for a, b in zip(list(model.parameters()) + list(opt.ema.parameters()), list(ref.parameters()) + list(ema.parameters())):
        assert torch.equal(a, b)
    assert opt.lr == schedule.get_last_lr()[0]
