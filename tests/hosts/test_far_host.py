"""FarHost: the official-weights FAR as a rollout host (tiny random-weight models, real diffusers
AutoencoderDC and scheduler, the real policy-managed loop)."""

import numpy as np
import pytest
import torch

from pipeline.config import FarParams
from pipeline.data.dmlab import dmlab_clips, read_dmlab_episode
from pipeline.hosts.far_host import FarBatchSession, FarHost, load_far_host
from pipeline.hosts.far_weights import FarVariant, MissingFarWeightError
from pipeline.networks.far import FAR, FARConfig
from pipeline.rollout.api import ChunkDecision, FrameInfo, TemporalCachePlan
from pipeline.rollout.loop import run_rollout

TINY = dict(in_channels=8, out_channels=8, num_layers=2, attention_head_dim=16, num_attention_heads=2,
            axes_dims_rope=(4, 6, 6))
TINY_LONG = FARConfig(**TINY, context_patch_size=2, short_term_ctx_winsize=6,
                      condition_cfg={"type": "action", "num_action_classes": 4})
TINY_DCAE = dict(
    in_channels=3, latent_channels=8, attention_head_dim=8,
    encoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[16, 32, 32], decoder_block_out_channels=[16, 32, 32],
    encoder_layers_per_block=[0, 1, 1], decoder_layers_per_block=[0, 1, 1],
    encoder_qkv_multiscales=[[], [], []], decoder_qkv_multiscales=[[], [], []],
    upsample_block_type="pixel_shuffle", downsample_block_type="pixel_unshuffle",
    decoder_norm_types=["batch_norm", "batch_norm", "rms_norm"], decoder_act_fns=["relu", "relu", "silu"],
    scaling_factor=0.5,
)


def random_far(cfg: FARConfig, seed: int = 0) -> FAR:
    torch.manual_seed(seed)
    model = FAR(cfg)
    with torch.no_grad():  # the official init zeroes adaLN/outputs; random weights make outputs informative
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if p.ndim == 1 and p.shape[0] == cfg.attention_head_dim else 0))
    return model.eval()


def tiny_dcae():
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    return AutoencoderDC(**TINY_DCAE).eval()


@pytest.fixture(scope="module")
def short_host():
    return FarHost(random_far(FARConfig(**TINY)), tiny_dcae(), sampling_steps=3)


@pytest.fixture(scope="module")
def long_host():
    return FarHost(random_far(TINY_LONG), tiny_dcae(), sampling_steps=3)


def latents(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 8, 4, 4, generator=torch.Generator().manual_seed(seed))


def fill(host, mode, frames, actions=None):
    s = host.start(mode, torch.Generator().manual_seed(0))
    for t, x in enumerate(frames):
        s.append(x, FrameInfo(t, None if actions is None else actions[t]))
    return s


def test_encode_decode_map_unit_pixels_to_scaled_latents_and_back(short_host):
    pixels = torch.rand(3, 3, 16, 16)
    z = short_host.encode(pixels)
    assert z.shape == (3, 8, 4, 4) and z.dtype == torch.float32
    raw = short_host.vae.encode(pixels * 2 - 1).latent
    torch.testing.assert_close(z, raw * 0.5)  # times the DCAE's scaling_factor
    out = short_host.decode(z)
    assert out.shape == pixels.shape and out.min() >= 0 and out.max() <= 1


def test_encode_rejects_frames_at_another_resolution_naming_the_param():
    host = FarHost(random_far(FARConfig(**TINY)), tiny_dcae(), resolution=64)
    with pytest.raises(ValueError, match=r"64x64.*got 16x16.*extract.size"):
        host.encode(torch.rand(1, 3, 16, 16))


def test_kv_session_holds_keys_and_values_and_evict_frees_them(short_host):
    s = fill(short_host, "kv", latents(4))
    per_frame = 2 * 2 * 16 * 32 * 4  # k+v, layers, tokens, inner dim, fp32
    assert s.retained_bytes() == 4 * per_frame  # pending frames count at their KV size
    s.generate(FrameInfo(0, None))
    assert s.cache.n_frames == 4 and s.cache.nbytes() == 4 * per_frame == s.retained_bytes()
    s.evict([1, 3])
    assert s.cache.n_frames == 2 and s.retained_bytes() == 2 * per_frame
    assert s.cache.layers[0].key.shape[2] == 2 * 16
    r = fill(short_host, "recompute", latents(4))
    assert r.retained_bytes() == 4 * 8 * 4 * 4 * 4  # recompute keeps the latents


def test_kv_and_recompute_generate_the_same_frame_from_the_same_history(short_host):
    hist = latents(5)
    noise = torch.randn(8, 4, 4)
    kv, rc = fill(short_host, "kv", hist), fill(short_host, "recompute", hist)
    torch.testing.assert_close(kv.generate(FrameInfo(0, None), noise=noise), rc.generate(FrameInfo(0, None), noise=noise),
                               atol=1e-5, rtol=1e-5)


def test_kv_evicting_the_newest_frames_equals_never_having_seen_them(short_host):
    # block-causal: older frames never attend to newer ones, so dropping a suffix is exact
    hist, noise = latents(5), torch.randn(8, 4, 4)
    kv = fill(short_host, "kv", hist)
    kv.generate(FrameInfo(0, None), noise=noise)  # caches all 5
    kv.evict([0, 1, 2])
    ref = fill(short_host, "recompute", hist[:3])
    torch.testing.assert_close(kv.generate(FrameInfo(0, None), noise=noise), ref.generate(FrameInfo(0, None), noise=noise),
                               atol=1e-5, rtol=1e-5)


def test_kv_evicting_old_frames_differs_from_recompute_because_nothing_is_recomputed(short_host):
    hist, noise = latents(5), torch.randn(8, 4, 4)
    kv = fill(short_host, "kv", hist)
    kv.generate(FrameInfo(0, None), noise=noise)
    kv.evict([2, 3, 4])
    rc = fill(short_host, "recompute", hist[2:])
    assert (kv.generate(FrameInfo(0, None), noise=noise) - rc.generate(FrameInfo(0, None), noise=noise)).abs().max() > 1e-4


def test_same_generator_seed_same_frame_different_seed_different_frame(short_host):
    hist = latents(3)
    a = fill(short_host, "recompute", hist).generate(FrameInfo(0, None))
    b = fill(short_host, "recompute", hist).generate(FrameInfo(0, None))
    s = short_host.start("recompute", torch.Generator().manual_seed(1))
    for x in hist:
        s.append(x, FrameInfo(0))
    torch.testing.assert_close(a, b)
    assert (a - s.generate(FrameInfo(0, None))).abs().max() > 1e-3


def test_far_long_actions_change_the_generated_frame(long_host):
    hist, noise = latents(3), torch.randn(8, 4, 4)
    a = fill(long_host, "recompute", hist, [0, 1, 2]).generate(FrameInfo(0, 3), noise=noise)
    b = fill(long_host, "recompute", hist, [0, 1, 2]).generate(FrameInfo(0, 0), noise=noise)
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="action 7 outside 0..3"):
        fill(long_host, "recompute", hist, [0, 1, 7])
    no_action = fill(long_host, "recompute", hist, [None, -1, None])
    assert no_action.actions == [4, 4, 4]  # None and -1 (no recorded action) are the null action


def test_far_long_kv_cache_is_exact_inside_the_window_and_falls_back_beyond_it(long_host):
    noise = torch.randn(8, 4, 4)
    inside = latents(5)  # 5 + new frame = window 6: cached
    kv, rc = fill(long_host, "kv", inside, [1] * 5), fill(long_host, "recompute", inside, [1] * 5)
    torch.testing.assert_close(kv.generate(FrameInfo(0, 2), noise=noise), rc.generate(FrameInfo(0, 2), noise=noise),
                               atol=1e-5, rtol=1e-5)
    assert kv.cache.n_frames == 5
    beyond = latents(7)  # the 2 oldest go through the long-term path: recomputed, with a warning
    kv, rc = fill(long_host, "kv", beyond, [1] * 7), fill(long_host, "recompute", beyond, [1] * 7)
    with pytest.warns(UserWarning, match="short-term window"):
        out = kv.generate(FrameInfo(0, 2), noise=noise)
    torch.testing.assert_close(out, rc.generate(FrameInfo(0, 2), noise=noise), atol=1e-5, rtol=1e-5)
    assert kv.retained_bytes() == rc.retained_bytes() == 7 * 8 * 4 * 4 * 4  # latents only: recomputed
    kv.evict([4, 5, 6])  # back inside the window: the kept frames re-enter the cache
    kv.generate(FrameInfo(0, 2), noise=noise)
    assert kv.cache.n_frames == 3


def test_model_kv_cache_refuses_frames_that_need_the_long_term_path(long_host):
    model, cache = long_host.model, long_host.model.new_cache()
    x = latents(7)[None]  # window 6: the oldest frame needs the long-term path
    with pytest.raises(ValueError, match="short-term window only"):
        model(x, torch.full((1, 7), -1.0), actions=torch.zeros(1, 7, dtype=torch.long), cache=cache, cache_frames=7)


def test_loop_gives_the_host_the_actions_of_the_frames_it_actually_keeps(long_host, monkeypatch):
    seen = []
    original = FarBatchSession.generate

    def recording(self, infos, noise=None):
        seen.append((list(self.actions[0]), infos[0].action))
        return original(self, infos, noise)

    class OldestAndNewest:  # keeps a gap in the history, so a slice from the clip start would be wrong
        name = "oldest_and_newest"

        def build_temporal_cache_plan(self, metas, state, budget):
            n = len(metas)
            return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep" if m.chunk_id in (0, n - 2, n - 1) else "drop")
                                      for m in metas])

    monkeypatch.setattr(FarBatchSession, "generate", recording)
    context, actions = latents(6), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    result = run_rollout(long_host, OldestAndNewest(), context, 4, max_frames=3, mode="kv",
                         generator=torch.Generator().manual_seed(0), actions=actions)
    assert len(seen) == 4
    for (history_actions, new_action), times, step in zip(seen, result.history_per_step, range(4)):
        assert history_actions == [actions[t] for t in times]  # aligned after pruning
        assert new_action == actions[6 + step]
    assert result.history_per_step[-1] == [0, 7, 8]
    assert max(result.kept_per_step) <= 3


def write_episode(path, n, seed=0, actions=True):
    rng = np.random.default_rng(seed)
    data = {"video": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)}
    if actions:
        data["actions"] = rng.integers(0, 4, n)
    np.savez(path, **data)
    return data


def test_dmlab_npz_clips_are_the_episode_starts_with_aligned_actions(tmp_path):
    a = write_episode(tmp_path / "a.npz", 12, seed=0)
    write_episode(tmp_path / "b.npz", 5, seed=1)  # too short: skipped
    c = write_episode(tmp_path / "c.npz", 10, seed=2)
    clips = dmlab_clips(tmp_path, n_clips=5, n_frames=8)
    assert [clip.id for clip in clips] == ["a", "c"]
    assert clips[0].frames.shape == (8, 3, 16, 16)
    torch.testing.assert_close(clips[1].frames[3], torch.from_numpy(c["video"][3]).permute(2, 0, 1).float() / 255)
    assert clips[0].actions == [int(x) for x in a["actions"][:8]]


def test_dmlab_npz_reader_names_the_file_and_what_is_wrong(tmp_path):
    write_episode(tmp_path / "bad.npz", 4, actions=False)
    with pytest.raises(ValueError, match=r"bad.npz: missing \['actions'\]"):
        read_dmlab_episode(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="benchmark.far.dmlab_npz"):
        dmlab_clips(tmp_path / "nowhere", 1, 4)


def tiny_variant() -> FarVariant:
    return FarVariant(name="tiny", transformer=TINY_LONG, transformer_file="long_video_prediction/tiny.pth",
                      dcae_file="dcae/tiny_dcae.pth", dcae_config=TINY_DCAE, resolution=16)


def test_load_far_host_reads_official_layout_from_far_weights_dir(tmp_path, monkeypatch):
    variant = tiny_variant()
    (tmp_path / "long_video_prediction").mkdir()
    (tmp_path / "dcae").mkdir()
    model, vae = random_far(TINY_LONG), tiny_dcae()
    torch.save(model.state_dict(), tmp_path / variant.transformer_file)
    torch.save(vae.state_dict(), tmp_path / variant.dcae_file)
    monkeypatch.setenv("FAR_WEIGHTS_DIR", str(tmp_path))
    host = load_far_host(FarParams(sampling_steps=2), "cpu", variant=variant)
    assert host.dtype == torch.float32 and host.uses_actions and host.sampling_steps == 2
    for k, v in model.state_dict().items():
        torch.testing.assert_close(host.model.state_dict()[k], v)
    clip = torch.rand(3, 3, 16, 16)
    s = host.start("kv", torch.Generator().manual_seed(0))
    for x in host.encode(clip):
        s.append(x, FrameInfo(0, 1))
    assert host.decode(s.generate(FrameInfo(0, 2))[None]).shape == (1, 3, 16, 16)


def test_load_far_host_without_weights_names_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FAR_WEIGHTS_DIR", raising=False)
    with pytest.raises(MissingFarWeightError, match=r"FAR_B_UCF101_Uncond64-381d295f.pth.*FAR_WEIGHTS_DIR"):
        load_far_host(FarParams(weights_dir=str(tmp_path)), "cpu")


@pytest.mark.parametrize("mode", ["recompute", "kv"])
def test_a_bf16_host_as_loaded_on_gpu_runs_the_loop_and_stays_near_fp32(short_host, mode):
    # load_far_host puts the weights in bf16 on CUDA; the same dtypes on CPU exercise that path.
    import copy

    bf16 = FarHost(copy.deepcopy(short_host.model).to(torch.bfloat16), copy.deepcopy(short_host.vae).to(torch.bfloat16),
                   sampling_steps=3)  # fmt: skip
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outs = {}
    for name, host in (("fp32", short_host), ("bf16", bf16)):
        context = host.encode(pixels)
        result = run_rollout(host, _KeepRecent(), context, 3, max_frames=2, mode=mode,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
        outs[name] = host.decode(result.generated).float()
    assert outs["bf16"].shape == (3, 3, 32, 32) and torch.isfinite(outs["bf16"]).all()
    assert (outs["bf16"] - outs["fp32"]).abs().mean() < 0.02  # bf16 rounding (~1e-3); another seed differs by ~0.2


class _KeepRecent:
    name = "keep_recent"

    def build_temporal_cache_plan(self, metas, rollout_state, budget_state):
        return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep") for m in metas])
