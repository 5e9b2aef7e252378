"""Batched rollouts (run_rollouts, the hosts' start_batch) equal the rollouts of each clip alone:
on this pipeline's host (with and without poses) and on FAR (plain, FAR_Long inside and beyond
its window, with CFG), in both modes and both protocols, under a budget and without, with a
policy whose evictions differ from clip to clip (so the rows' histories differ in length)."""

import pytest
import torch

from pipeline.diffusion.sampler import ShortcutEulerSampler
from pipeline.hosts.far_host import FarHost
from pipeline.hosts.pipeline_host import PipelineHost
from pipeline.networks.dynamics import build_dynamics, config_dict
from pipeline.networks.far import FARConfig
from pipeline.networks.pose_memory import PoseStats
from pipeline.networks.tokenizer import build_tokenizer, tokenizer_config
from pipeline.rollout.api import ChunkDecision, TemporalCachePlan
from pipeline.rollout.batch import SerialBatch, start_batch
from pipeline.rollout.loop import run_rollout, run_rollouts
from tests.builders import dynamics_config
from tests.hosts.test_far_host import TINY, TINY_LONG, random_far, tiny_dcae
from tests.rollout.toy_host import ToyHost

N_CLIPS, N_CTX, N_PREDICT = 3, 6, 4


class Scattered:
    """Keeps a frame unless (its time + 1e4 x its motion strength) is a multiple of 3: a rule of
    the clip's content, so each clip keeps other frames; records the attention_mass it sees."""

    name = "scattered"

    def __init__(self):
        self.seen = []

    def build_temporal_cache_plan(self, metas, state, budget):
        self.seen.append([m.attention_mass for m in metas])
        return TemporalCachePlan([ChunkDecision(m.chunk_id, "drop" if (m.time + int(1e4 * m.motion_strength)) % 3 == 0
                                                else "keep") for m in metas])


def pipeline_host(poses: bool) -> PipelineHost:
    torch.manual_seed(0)
    tok = build_tokenizer(tokenizer_config(dict(arch="conv", latent_channels=4, downsample=4, base_channels=8,
                                                patch_size=8), 32))
    config = dynamics_config((4, 8, 8), n_actions=3, dim=32, depth=4, heads=2, kv_heads=1, patch_size=2,
                             num_registers=1, temporal_every=2, k_max=16, mlp_ratio=4.0, logit_softcap=50.0,
                             poses=PoseStats((0.0, 0.0), 1.0) if poses else None)
    dyn = build_dynamics(config_dict(config))
    torch.nn.init.normal_(dyn.patch_out.weight, std=0.2)  # the zero-initialised head would predict 0
    return PipelineHost(tok, dyn, ShortcutEulerSampler(4, tau_ctx=0.1))


HOSTS = {
    "pipeline": lambda: pipeline_host(poses=False),
    "pipeline_posed": lambda: pipeline_host(poses=True),
    "far": lambda: FarHost(random_far(FARConfig(**TINY)), tiny_dcae(), sampling_steps=3),
    "far_long": lambda: FarHost(random_far(TINY_LONG), tiny_dcae(), sampling_steps=3),  # window 6: full history leaves it
    "far_long_cfg": lambda: FarHost(random_far(TINY_LONG), tiny_dcae(), sampling_steps=2, guidance_scale=1.5),
}
LATENT = {"pipeline": (4, 8, 8), "pipeline_posed": (4, 8, 8), "far": (8, 4, 4), "far_long": (8, 4, 4),
          "far_long_cfg": (8, 4, 4)}
N_ACTIONS = {"pipeline": 3, "pipeline_posed": 3, "far": 4, "far_long": 4, "far_long_cfg": 4}


@pytest.fixture(scope="module")
def hosts():
    return {name: build() for name, build in HOSTS.items()}


def clips(name: str, with_actions: bool):
    """N_CLIPS clips: contexts (different content per clip), actions and poses per clip frame."""
    g = torch.Generator().manual_seed(11)
    n = N_CTX + N_PREDICT
    contexts = [torch.randn(N_CTX, *LATENT[name], generator=g).tanh() for _ in range(N_CLIPS)]
    actions = [torch.randint(0, N_ACTIONS[name], (n,), generator=g).tolist() if with_actions else None
               for _ in range(N_CLIPS)]
    poses = [torch.cumsum(torch.randn(n, 3, generator=g), 0).mul(torch.tensor([1.0, 1.0, 30.0])).tolist()
             if name == "pipeline_posed" else None for _ in range(N_CLIPS)]
    return contexts, actions, poses


def generators():
    return [torch.Generator().manual_seed(100 + i) for i in range(N_CLIPS)]


def check_batched_equals_alone(host, name, mode, protocol, max_frames, with_actions, atol):
    contexts, actions, poses = clips(name, with_actions)
    alone_policies = [Scattered() for _ in range(N_CLIPS)]
    alone = [run_rollout(host, alone_policies[i], contexts[i], N_PREDICT, max_frames=max_frames, mode=mode,
                         generator=generators()[i], actions=actions[i], poses=poses[i], protocol=protocol)
             for i in range(N_CLIPS)]
    batch_policies = [Scattered() for _ in range(N_CLIPS)]
    batched = run_rollouts(host, batch_policies, contexts, N_PREDICT, max_frames=max_frames, mode=mode,
                           generators=generators(), actions=actions, poses=poses, protocol=protocol)
    for a, b, pa, pb in zip(alone, batched, alone_policies, batch_policies):
        assert a.history_per_step == b.history_per_step and a.kept_per_step == b.kept_per_step
        assert a.peak_retained_bytes == b.peak_retained_bytes
        torch.testing.assert_close(b.generated, a.generated, atol=atol, rtol=1e-4)
        assert a.generated.abs().mean() > 1e-3  # a real prediction
        assert len(pa.seen) == len(pb.seen)
        for sa, sb in zip(pa.seen, pb.seen):
            assert [s is None for s in sa] == [s is None for s in sb]
            assert [s for s in sa if s is not None] == pytest.approx([s for s in sb if s is not None], abs=1e-5)
        assert b.batch_size == N_CLIPS
    return alone


@pytest.mark.parametrize("with_actions", [True, False], ids=["actions", "no_actions"])
@pytest.mark.parametrize("max_frames", [None, 3], ids=["full", "budget3"])
@pytest.mark.parametrize("protocol", ["default", "harness"])
@pytest.mark.parametrize("mode", ["recompute", "kv"])
@pytest.mark.parametrize("name", ["pipeline", "pipeline_posed", "far", "far_long"])
def test_a_batch_of_clips_generates_what_each_clip_generates_alone(hosts, name, mode, protocol, max_frames,
                                                                  with_actions, recwarn):
    alone = check_batched_equals_alone(hosts[name], name, mode, protocol, max_frames, with_actions, atol=2e-5)
    if protocol == "default":  # the clips keep other frames (and without a budget, other numbers of frames)
        assert len({str(r.history_per_step) for r in alone}) > 1
        assert max_frames is not None or len({tuple(r.kept_per_step) for r in alone}) > 1


@pytest.mark.parametrize("mode", ["recompute", "kv"])
def test_far_long_with_classifier_free_guidance_batches_too(hosts, mode, recwarn):
    check_batched_equals_alone(hosts["far_long_cfg"], "far_long_cfg", mode, "default", None, True, atol=2e-5)


def test_a_host_without_start_batch_runs_one_session_per_row_exactly():
    host = ToyHost()
    assert isinstance(start_batch(host, "kv", generators()), SerialBatch)
    contexts, actions, _ = clips("far", True)
    contexts = [c[:, :3] for c in contexts]
    for mode in ("recompute", "kv"):
        alone = [run_rollout(host, Scattered(), contexts[i], N_PREDICT, max_frames=3, mode=mode,
                             generator=generators()[i], actions=actions[i]) for i in range(N_CLIPS)]
        batched = run_rollouts(host, Scattered(), contexts, N_PREDICT, max_frames=3, mode=mode, generators=generators(),
                               actions=actions)
        for a, b in zip(alone, batched):
            assert torch.equal(a.generated, b.generated) and a.history_per_step == b.history_per_step


def test_batch_seconds_are_shared_and_policy_seconds_are_each_rows_own(hosts):
    contexts, actions, _ = clips("pipeline", True)
    results = run_rollouts(hosts["pipeline"], Scattered(), contexts, 2, max_frames=None, mode="kv",
                           generators=generators(), actions=actions)
    assert len({r.seconds for r in results}) == 1 and all(0 < r.policy_seconds < r.seconds * N_CLIPS for r in results)


def test_a_batch_needs_one_generator_per_clip(hosts):
    contexts, _, _ = clips("pipeline", False)
    with pytest.raises(ValueError, match="one of each per rollout"):
        run_rollouts(hosts["pipeline"], Scattered(), contexts, 2, max_frames=None, mode="kv", generators=generators()[:2])
