from dataclasses import MISSING, fields

import pytest
import torch

from pipeline.diffusion.objective import causal_visibility
from pipeline.networks import dynamics
from pipeline.networks.checkpoint import CheckpointError, load_trained, save_checkpoint
from pipeline.networks.dynamics import (
    DynamicsConfig,
    DynamicsTransformer,
    build_dynamics,
    config_dict,
)
from pipeline.networks.pose_memory import PoseStats
from tests.builders import dynamics_config, params_section

TINY = dict(dim=32, depth=4, heads=4, kv_heads=2, patch_size=2, num_registers=2, temporal_every=2, k_max=8,
            mlp_ratio=4.0, logit_softcap=50.0)


def tiny(**overrides) -> DynamicsTransformer:
    """A small model on latents (4, 8, 8) with 3 actions, weights perturbed from their init."""
    torch.manual_seed(0)
    model = DynamicsTransformer(dynamics_config((4, 8, 8), n_actions=3, **(TINY | overrides))).eval()
    with torch.no_grad():  # the zero-initialised head would make every comparison trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def inputs(b=2, t=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 4, 8, 8, generator=g)
    tau = torch.rand(b, t, generator=g)
    d = torch.full((b, t), 0.25)
    actions = torch.randint(-1, 3, (b, t), generator=g)
    return x, tau, d, actions


@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_changing_frame_t_plus_1_never_changes_outputs_at_or_before_t(softcap):
    model = tiny(logit_softcap=softcap)
    x, tau, d, actions = inputs()
    base = model(x, tau, d, actions)
    for t in range(5):
        x2, tau2, a2 = x.clone(), tau.clone(), actions.clone()
        x2[:, t + 1] += 1.0
        tau2[:, t + 1] = 0.5
        a2[:, t + 1] = (a2[:, t + 1] + 2) % 3
        out = model(x2, tau2, d, a2)
        assert torch.equal(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1], base[:, t + 1])


@pytest.mark.parametrize("softcap,kv_heads", [(0.0, 4), (50.0, 2), (50.0, 1)])
def test_generation_through_the_kv_cache_equals_forward_on_the_whole_sequence(softcap, kv_heads):
    model = tiny(logit_softcap=softcap, kv_heads=kv_heads)
    x, tau, d, actions = inputs()
    full = model(x, tau, d, actions)
    cache = model.new_cache(2)
    with torch.no_grad():
        steps = [model.step(cache, x[:, t], tau[:, t], d[:, t], actions[:, t], append=True) for t in range(6)]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert len(cache) == 6 and cache.positions == list(range(6))


@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_prefill_equals_appending_frame_by_frame_also_after_cached_and_evicted_frames(softcap):
    model = tiny(logit_softcap=softcap)
    x, tau, d, actions = inputs()
    by_step, batched = model.new_cache(2), model.new_cache(2)
    with torch.no_grad():
        for cache in (by_step, batched):
            for t in range(3):
                model.step(cache, x[:, t], tau[:, t], d[:, t], actions[:, t], append=True)
            cache.evict([0, 2])
        steps = torch.stack([model.step(by_step, x[:, t], tau[:, t], d[:, t], actions[:, t], append=True)
                             for t in range(3, 6)], 1)
        out = model.prefill(batched, x[:, 3:], tau[:, 3:], d[:, 3:], actions[:, 3:])
    torch.testing.assert_close(out, steps, rtol=1e-5, atol=1e-5)
    assert batched.positions == by_step.positions == [0, 2, 3, 4, 5]
    for a, b in zip(batched.keys + batched.values, by_step.keys + by_step.values):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def cache_of_first_frames(model, n: int):
    """A batch-2 cache holding the first n frames of ``inputs()``, appended step by step."""
    x, tau, d, actions = inputs()
    cache = model.new_cache(2)
    for t in range(n):
        model.step(cache, x[:, t], tau[:, t], d[:, t], actions[:, t], append=True)
    return cache


def test_a_step_without_append_leaves_the_cache_unchanged():
    model = tiny()
    x = inputs()[0]
    cache = cache_of_first_frames(model, 3)
    before = (cache.nbytes(), list(cache.positions))
    first = model.step(cache, x[:, 3], 0.7, 0.25, None, append=False)
    again = model.step(cache, x[:, 3], 0.7, 0.25, None, append=False)
    assert (cache.nbytes(), cache.positions) == before
    assert torch.equal(first, again)


def test_evicting_frames_frees_their_bytes_and_keeps_absolute_positions():
    model = tiny()
    x, tau, d, actions = inputs()
    cache = cache_of_first_frames(model, 4)
    per_frame = cache.nbytes() / 4
    # B * N tokens x kv_heads x head_dim, keys and values, 2 temporal layers, fp32
    assert per_frame == 2 * model.config.tokens_per_frame * 2 * 8 * 2 * 2 * 4
    kept_keys = cache.keys[0][:, :, [1, 3]].clone()
    cache.evict([1, 3])
    assert len(cache) == 2 and cache.positions == [1, 3] and cache.nbytes() == 2 * per_frame
    assert torch.equal(cache.keys[0], kept_keys)
    model.step(cache, x[:, 4], tau[:, 4], d[:, 4], actions[:, 4], append=True)
    assert cache.positions == [1, 3, 4]  # the new frame comes after the newest ever appended
    cache.evict([])
    assert len(cache) == 0 and cache.nbytes() == 0
    model.step(cache, x[:, 5], tau[:, 5], d[:, 5], None, append=True)
    assert cache.positions == [5]
    with pytest.raises(IndexError, match="increasing indices"):
        cache.evict([0, 0])
    with pytest.raises(IndexError, match=r"\[0, 1\)"):
        cache.evict([1])


def test_single_frame_rows_see_each_frame_as_a_single_frame_sequence():
    model = tiny()
    x, tau, d, actions = inputs()
    visible = causal_visibility(2, x.shape[1])
    visible[0] = torch.eye(x.shape[1], dtype=torch.bool)  # row 0: single frames
    out = model(x, tau, d, actions, visible=visible)
    alone = model(x[:1, 3:4], tau[:1, 3:4], d[:1, 3:4], actions[:1, 3:4])
    torch.testing.assert_close(out[0, 3], alone[0, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], model(x, tau, d, actions)[1], rtol=1e-5, atol=1e-5)


def test_actions_change_the_prediction_and_unknown_actions_are_rejected():
    model = tiny()
    x, tau, d, actions = inputs()
    assert not torch.allclose(model(x, tau, d, actions), model(x, tau, d, None))
    with pytest.raises(ValueError, match="n_actions"):
        model(x, tau, d, torch.full_like(actions, 3))


def test_load_dynamics_gives_the_ema_weights_in_eval_mode_and_rejects_a_mismatched_config(tmp_path):
    model, ema = tiny(), tiny()
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    save_checkpoint(tmp_path / "dyn", kind="dynamics", config=config_dict(model.config), model=model, ema=ema)
    loaded = load_trained(tmp_path / "dyn", "dynamics", build_dynamics)
    x, tau, d, actions = inputs()
    assert not loaded.training
    torch.testing.assert_close(loaded(x, tau, d, actions), ema(x, tau, d, actions))
    bigger = config_dict(model.config) | {"dim": 64}
    save_checkpoint(tmp_path / "bad", kind="dynamics", config=bigger, model=model)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_trained(tmp_path / "bad", "dynamics", build_dynamics)
    assert isinstance(build_dynamics(config_dict(model.config)), DynamicsTransformer)


def test_patch_size_must_divide_the_latent_grid():
    with pytest.raises(ValueError, match="patch_size 3"):
        DynamicsTransformer(dynamics_config((4, 8, 8), **(TINY | {"patch_size": 3})))


def test_normalize_maps_latents_to_the_model_space_and_denormalize_inverts_it():
    model = tiny(latent_mean=0.2, latent_std=0.4)
    x = torch.randn(3, 4, 8, 8)
    torch.testing.assert_close(model.normalize(x), (x - 0.2) / 0.4)
    torch.testing.assert_close(model.denormalize(model.normalize(x)), x)
    identity = tiny()  # defaults: no normalisation
    torch.testing.assert_close(identity.normalize(x), x)


def test_the_normalisation_is_part_of_the_saved_config(tmp_path):
    model = tiny(latent_mean=-0.1, latent_std=0.385)
    save_checkpoint(tmp_path / "dyn", kind="dynamics", config=config_dict(model.config), model=model, ema=model)
    loaded = load_trained(tmp_path / "dyn", "dynamics", build_dynamics)
    assert (loaded.config.latent_mean, loaded.config.latent_std) == (-0.1, 0.385)


def test_a_non_positive_latent_std_is_rejected():
    with pytest.raises(ValueError, match="latent_std"):
        DynamicsTransformer(dynamics_config((4, 8, 8), latent_std=0.0, **TINY))


def test_a_checkpoint_config_must_name_every_field_and_nothing_else():
    config = config_dict(tiny().config)
    with pytest.raises(ValueError, match=r"missing keys \['k_max'\]"):
        build_dynamics({k: v for k, v in config.items() if k != "k_max"})
    with pytest.raises(ValueError, match=r"unexpected keys \['dropout'\]"):
        build_dynamics(config | {"dropout": 0.1})


def test_the_config_is_the_model_params_section_plus_the_data_it_was_trained_on():
    model = params_section("model")
    config = dynamics.dynamics_config(model, (8, 16, 16), n_actions=18, latent_mean=-0.1, latent_std=0.4)
    section = {k: v for k, v in model.model_dump().items() if k not in ("pose_conditioning", "pose_recall")}
    assert config_dict(config) == {"latent_channels": 8, "latent_height": 16, "latent_width": 16, "n_actions": 18,
                                   **section, "latent_mean": -0.1, "latent_std": 0.4, "pose_conditioning": False,
                                   "pose_recall": 0.0, "pose_center": (0.0, 0.0), "pose_step": 1.0}  # no poses
    with_poses = dynamics.dynamics_config(model, (8, 16, 16), n_actions=18, poses=PoseStats((1.0, 2.0), 3.0))
    assert (with_poses.pose_conditioning, with_poses.pose_center, with_poses.pose_step) == (True, (1.0, 2.0), 3.0)
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(DynamicsConfig))  # params only


def test_a_model_first_run_in_inference_mode_still_trains():
    model = tiny().train()
    x, tau, d, actions = inputs()
    with torch.inference_mode():  # builds the cached spatial RoPE table
        model(x, tau, d, actions)
    model(x, tau, d, actions).square().mean().backward()
    assert model.patch_in.weight.grad is not None


# ---------------------------------------------------------------------------------------------
# Memory: poses, the temporal biases, gapped histories at the frames' own times
# ---------------------------------------------------------------------------------------------
def posed(**overrides) -> DynamicsTransformer:
    """A tiny pose-conditioned model (poses centred at 0, a typical step of 1)."""
    torch.manual_seed(0)
    config = dynamics_config((4, 8, 8), n_actions=3, poses=PoseStats((0.0, 0.0), 1.0), **(TINY | overrides))
    model = DynamicsTransformer(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rate" not in name:  # keep the biases' initial rates: the tests below read them
                p.add_(torch.randn_like(p) * 0.1)
    return model


def pose_track(b=2, t=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    xy = torch.randn(b, t, 2, generator=g) * 4
    heading = torch.randint(0, 16, (b, t, 1), generator=g).float() * 22.5
    return torch.cat([xy, heading], dim=-1)


@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_a_gapped_history_through_the_kv_cache_equals_forward_with_that_visibility(softcap):
    """Frames 0, 3, 4 kept (1, 2 evicted), frame 5 generated at its own time: the cache computes
    what forward computes when each frame sees only what the cache held when it entered."""
    model = posed(logit_softcap=softcap)
    x, tau, d, actions = inputs()
    poses = pose_track()
    visible = causal_visibility(2, 6)
    for row, seen in {3: [0, 3], 4: [0, 3, 4], 5: [0, 3, 4, 5]}.items():
        visible[:, row] = False
        visible[:, row, seen] = True
    clean = torch.randn_like(x)  # the frames' clean latents: what pose recall recalls
    full = model(x, tau, d, actions, poses, visible, memory=clean)
    cache = model.new_cache(2)
    for t in (0, 3, 4):
        model.step(cache, x[:, t], tau[:, t], d[:, t], actions[:, t], append=True, pose=poses[:, t], time=t,
                   memory=clean[:, t])
    assert cache.positions == [0, 3, 4]
    out = model.step(cache, x[:, 5], tau[:, 5], d[:, 5], actions[:, 5], append=False, pose=poses[:, 5], time=5)
    torch.testing.assert_close(out, full[:, 5], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_frames_at_times_zero_to_t_are_the_default_and_rope_sees_only_time_differences(softcap):
    model = tiny(logit_softcap=softcap)
    x, tau, d, actions = inputs()
    visible = causal_visibility(2, 6)
    visible[1, 4, 1:3] = False  # a gapped row: the mask path too
    with torch.no_grad():
        for vis in (None, visible):
            base = model(x, tau, d, actions, visible=vis)
            arange = torch.arange(6).expand(2, 6)
            torch.testing.assert_close(model(x, tau, d, actions, visible=vis, times=arange), base, rtol=0, atol=1e-6)
            # RoPE is relative: shifting every frame of a row (rows by different amounts) changes nothing
            shifted = arange + torch.tensor([[100], [57]])
            torch.testing.assert_close(model(x, tau, d, actions, visible=vis, times=shifted), base, rtol=1e-4, atol=1e-4)
            gapped = torch.tensor([[0, 30, 90, 150, 151, 152]] * 2)  # other distances: other outputs
            out = model(x, tau, d, actions, visible=vis, times=gapped)
            torch.testing.assert_close(out[:, 0], base[:, 0], rtol=1e-4, atol=1e-4)  # the first frame sees only itself
            assert not torch.allclose(out[:, 1:], base[:, 1:], atol=1e-3)
            one = model(x[:1], tau[:1], d[:1], actions[:1], visible=None if vis is None else vis[:1], times=gapped[:1])
            torch.testing.assert_close(one, out[:1], rtol=1e-5, atol=1e-5)  # each row at its own times
    with pytest.raises(ValueError, match=r"times of shape \(6,\), expected \(B, T\) = \(2, 6\)"):
        model(x, tau, d, actions, times=torch.arange(6))


@pytest.mark.parametrize("softcap", [0.0, 50.0])
def test_kept_frames_at_their_own_times_through_the_kv_cache_equal_forward_at_those_times(softcap):
    """A gapped training row (frames kept from a long span, causal over the kept ones) is what a rollout
    computes for a cache holding those frames at their clip times."""
    model = posed(logit_softcap=softcap)
    x, tau, d, actions = inputs()
    poses = pose_track()
    clean = torch.randn_like(x)
    times = torch.tensor([[0, 41, 97, 150, 174, 175], [3, 12, 120, 173, 174, 175]])
    with torch.no_grad():
        full = model(x, tau, d, actions, poses, causal_visibility(2, 6), memory=clean, times=times)
        cache = model.new_cache(2)
        steps = [model.step(cache, x[:, t], tau[:, t], d[:, t], actions[:, t], append=True, pose=poses[:, t],
                            time=times[:, t], memory=clean[:, t]) for t in range(6)]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_poses_condition_a_pose_model_and_unknown_poses_count_as_none():
    model = posed()
    x, tau, d, actions = inputs()
    poses = pose_track()
    with_poses = model(x, tau, d, actions, poses, memory=x)
    assert not torch.allclose(with_poses, model(x, tau, d, actions, pose_track(seed=3), memory=x))
    torch.testing.assert_close(model(x, tau, d, actions, torch.full_like(poses, float("nan")), memory=x),
                               model(x, tau, d, actions, None))
    assert not tiny().config.pose_conditioning  # data without poses: no pose conditioning


def test_the_pose_bias_favours_frames_seen_from_the_same_place_and_heading():
    model = posed()
    first = next(b for b in model.blocks if b.temporal).bias
    here = torch.tensor([[[0.0, 0.0, 90.0]]])
    keys = torch.tensor([[[0.0, 0.0, 90.0], [0.0, 0.0, 112.5], [4.0, 0.0, 90.0], [0.0, 0.0, 270.0]]])
    bias = first(here, keys, torch.zeros(1, 4))[0, :, 0]  # (heads, keys)
    assert torch.all(bias[:, 0] == 0)  # the same pose costs nothing
    assert torch.all(bias[:, 0] > bias[:, 1]) and torch.all(bias[:, 1] > bias[:, 3])  # turned 22.5 vs 180 degrees
    assert torch.all(bias[:, 0] > bias[:, 2])  # moved


def test_the_clean_bias_makes_heads_prefer_clean_context_over_noisy_frames():
    model = tiny()  # no poses: the clean bias alone
    block = next(b for b in model.blocks if b.temporal)
    bias = block.bias(None, None, torch.tensor([[0.1, 1.0]]))[0, :, 0]  # a clean-ish and a pure-noise key
    assert torch.all(bias[:, 0] > bias[:, 1])
    assert next(b for b in tiny(clean_bias=0.0).blocks if b.temporal).bias is None  # 0 disables it


def test_temporal_first_puts_a_temporal_block_first():
    assert [b.temporal for b in tiny(temporal_first=True).blocks] == [True, False, True, False]
    assert [b.temporal for b in tiny(temporal_first=False).blocks] == [False, True, False, True]


@pytest.mark.parametrize("softcap", [0.0, 50.0])
@pytest.mark.parametrize("recall", [False, True])
def test_a_ragged_cache_gives_each_row_what_its_own_cache_gives(softcap, recall):
    """Rows with their own histories (different frames, counts, times and evictions) in one
    cache: each row's keys/values, positions and step predictions are those of a one-row cache
    (with pose recall: recalling from the row's own frames only)."""
    model = posed(logit_softcap=softcap) if recall else tiny(logit_softcap=softcap)
    x, tau, d, actions = inputs(b=3, t=6)
    poses, clean = (pose_track(b=3), torch.randn_like(x)) if recall else (None, None)
    at = lambda v, i: None if v is None else v[:, i]  # noqa: E731
    row = lambda v, b, i: None if v is None else v[b:b + 1, i]  # noqa: E731
    counts, times = [4, 2, 3], [[0, 1, 2, 3], [5, 8, 0, 0], [1, 4, 6, 0]]
    keeps = [[0, 2, 3], [1], [0, 1, 2]]
    cache = model.new_cache(3)
    observed = torch.tensor([[True, False, True, False], [False, True, True, True], [True, True, False, True]])
    model.prefill(cache, x[:, :4], tau[:, :4], d[:, :4], actions[:, :4], at(poses, slice(0, 4)), times=times,
                  counts=counts, memory=at(clean, slice(0, 4)), observed=observed)
    cache.evict_rows(keeps)
    assert cache.lengths == [3, 1, 3] and cache.ragged and cache.row_positions[1] == [8]
    steps = model.step(cache, x[:, 5], tau[:, 5], d[:, 5], actions[:, 5], append=True, time=[9, 10, 11],
                       pose=at(poses, 5), memory=at(clean, 5))
    out = model.step(cache, x[:, 4], 0.5, 0.25, actions[:, 4], append=False, time=12, pose=at(poses, 4))
    with pytest.raises(ValueError, match="rows hold different frames"):
        cache.positions  # noqa: B018
    for b in range(3):
        alone = model.new_cache(1)
        first = slice(0, counts[b])
        model.prefill(alone, x[b:b + 1, first], tau[b:b + 1, first], d[b:b + 1, first], actions[b:b + 1, first],
                      row(poses, b, first), times=times[b][:counts[b]], memory=row(clean, b, first),
                      observed=observed[b:b + 1, first])
        alone.evict(keeps[b])
        step = model.step(alone, x[b:b + 1, 5], tau[b:b + 1, 5], d[b:b + 1, 5], actions[b:b + 1, 5], append=True,
                          time=9 + b, pose=row(poses, b, 5), memory=row(clean, b, 5))
        torch.testing.assert_close(steps[b:b + 1], step, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out[b:b + 1], model.step(alone, x[b:b + 1, 4], 0.5, 0.25, actions[b:b + 1, 4],
                                                            append=False, time=12, pose=row(poses, b, 4)),
                                   atol=1e-5, rtol=1e-4)
        assert cache.row_positions[b] == alone.positions and cache.row_nbytes()[b] == alone.nbytes()
        n = len(alone)
        torch.testing.assert_close(cache.keys[1].view(3, -1, *cache.keys[1].shape[1:])[b, :, :, :n],
                                   alone.keys[1], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Pose recall: the view seen from here before, as an input and a gated copy
# ---------------------------------------------------------------------------------------------
def copier() -> DynamicsTransformer:
    """A pose-recall model whose head only copies: zero head, copy gates wide open."""
    model = posed(pose_recall=500.0)
    with torch.no_grad():
        model.patch_out.weight.zero_()
        model.patch_out.bias.zero_()
        model.copy_gate.weight.zero_()
        model.copy_gate.bias.fill_(30.0)
    return model


def test_pose_recall_copies_the_frame_seen_from_the_same_place_and_heading():
    model = copier()
    x, tau, d, actions = inputs(b=1, t=4)
    clean = torch.randn_like(x)
    poses = torch.tensor([[[0.0, 0.0, 0.0], [20.0, 0.0, 90.0], [0.0, 20.0, 180.0], [20.0, 0.0, 90.0]]])
    out = model(x, tau, d, actions, poses, memory=clean)
    torch.testing.assert_close(out[:, 3], clean[:, 1], atol=1e-4, rtol=1e-4)  # frame 3 is seen from frame 1's pose
    torch.testing.assert_close(out[:, 0], torch.zeros_like(out[:, 0]))  # the first frame has nothing to recall


def test_an_evicted_frame_is_not_recalled_and_appending_without_clean_latents_is_refused():
    model = copier()
    x, tau, d, actions = inputs(b=1, t=3)
    clean = torch.randn_like(x)
    poses = torch.tensor([[[0.0, 0.0, 0.0], [30.0, 0.0, 180.0], [0.0, 0.0, 0.0]]])
    cache = model.new_cache(1)
    model.prefill(cache, x[:, :2], tau[:, :2], d[:, :2], actions[:, :2], poses[:, :2], memory=clean[:, :2])
    step = lambda: model.step(cache, x[:, 2], 1.0, 0.25, actions[:, 2], append=False, pose=poses[:, 2])  # noqa: E731
    torch.testing.assert_close(step(), clean[:, 0], atol=1e-4, rtol=1e-4)
    cache.evict([1])
    torch.testing.assert_close(step(), clean[:, 1], atol=1e-4, rtol=1e-4)  # only frame 1 is left to recall
    assert cache.row_nbytes() == [cache.nbytes()] and cache.memory.shape[1] == 1
    with pytest.raises(ValueError, match="pose_recall.*clean latents"):
        model.step(cache, x[:, 2], 0.1, 0.25, actions[:, 2], append=True, pose=poses[:, 2])
    with pytest.raises(ValueError, match="pose_recall.*memory"):
        model(x, tau, d, actions, poses)


def test_pose_recall_reads_observed_frames_first_and_generated_ones_only_when_none_is_kept():
    """A generated frame seen from exactly here loses to an observed one seen from elsewhere,
    through the cache and in forward alike; once no observed frame is kept, it is recalled."""
    model = copier()
    x, tau, d, actions = inputs(b=1, t=3)
    clean = torch.randn_like(x)
    poses = torch.tensor([[[30.0, 0.0, 90.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    observed = torch.tensor([[True, False, True]])  # frame 1: the model's own, from the new frame's pose
    cache = model.new_cache(1)
    model.prefill(cache, x[:, :2], tau[:, :2], d[:, :2], actions[:, :2], poses[:, :2], memory=clean[:, :2],
                  observed=observed[:, :2])
    step = lambda: model.step(cache, x[:, 2], 1.0, 0.25, actions[:, 2], append=False, pose=poses[:, 2])  # noqa: E731
    torch.testing.assert_close(step(), clean[:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model(x, tau, d, actions, poses, memory=clean, observed=observed)[:, 2], clean[:, 0],
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model(x, tau, d, actions, poses, memory=clean)[:, 2], clean[:, 1],
                               atol=1e-4, rtol=1e-4)  # all observed: the nearest view wins
    cache.evict([1])
    torch.testing.assert_close(step(), clean[:, 1], atol=1e-4, rtol=1e-4)


def test_a_copy_gate_shift_makes_a_step_copy_the_recalled_view():
    model = posed(pose_recall=500.0)
    x, tau, d, actions = inputs(b=1, t=4)
    clean = torch.randn_like(x)
    poses = torch.tensor([[[0.0, 0.0, 0.0], [20.0, 0.0, 90.0], [0.0, 20.0, 180.0], [20.0, 0.0, 90.0]]])
    cache = model.new_cache(1)
    model.prefill(cache, x[:, :3], tau[:, :3], d[:, :3], actions[:, :3], poses[:, :3], memory=clean[:, :3])
    step = lambda shift: model.step(cache, x[:, 3], 1.0, 0.25, actions[:, 3], append=False,  # noqa: E731
                                    pose=poses[:, 3], copy_gate_shift=shift)
    assert not torch.allclose(step(0.0), clean[:, 1], atol=1e-2)  # as trained: blended with the head
    torch.testing.assert_close(step(30.0), clean[:, 1], atol=1e-4, rtol=1e-4)
