"""FAR, FAR_Long and the DCAE reproduce the reference implementation (showlab/FAR) exactly.

The reference data (tests/hosts/far_reference, see its README) holds tiny random-weight models and
their outputs: single forwards, the DCAE, and whole next-frame rollouts with and without the KV
cache, FAR_Long with actions and with null actions. Tolerance: float32 on CPU.
"""

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from pipeline.hosts.far_host import FarHost
from pipeline.hosts.far_weights import DCAE_8X_C32, VARIANTS
from pipeline.networks.far import FAR, FARConfig, far_config
from pipeline.rollout.api import FrameInfo

REF = Path(__file__).resolve().parent / "far_reference"
ATOL, RTOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def ref():
    from safetensors.torch import load_file

    configs = json.loads((REF / "tiny_configs.json").read_text())
    return {"cases": load_file(REF / "cases.safetensors"), "configs": configs}


def tiny_far(ref, name: str) -> FAR:
    from safetensors.torch import load_file

    cfg = dict(ref["configs"][name], axes_dims_rope=tuple(ref["configs"][name]["axes_dims_rope"]))
    model = FAR(FARConfig(**cfg))
    model.load_state_dict(load_file(REF / f"{name}.safetensors"), strict=True)
    return model.eval()


def tiny_dcae(ref):
    from diffusers import AutoencoderDC
    from safetensors.torch import load_file

    vae = AutoencoderDC(**ref["configs"]["dcae_tiny"])
    vae.load_state_dict(load_file(REF / "dcae_tiny.safetensors"), strict=True)
    return vae.eval()


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


@torch.no_grad()
def test_far_eval_forward_predicts_the_last_frame_as_the_reference(ref):
    c = ref["cases"]
    out = tiny_far(ref, "far_tiny")(c["far.forward.input"], c["far.forward.timestep"])
    close(out[:, -1:], c["far.forward.output"])


@torch.no_grad()
def test_far_train_forward_matches_the_reference_on_every_frame(ref):
    c = ref["cases"]
    model = tiny_far(ref, "far_tiny").train()
    close(model(c["far.forward.input"], c["far.train_forward.timestep"]), c["far.train_forward.output"])


@torch.no_grad()
def test_far_long_forward_with_long_term_context_and_actions_matches_the_reference(ref):
    c = ref["cases"]
    model = tiny_far(ref, "far_long_tiny")
    out = model(c["far_long.forward.input"], c["far_long.forward.timestep"], actions=c["far_long.forward.action"])
    close(out[:, -1:], c["far_long.forward.output"])
    # the null action really changes the prediction: actions are not ignored
    null = torch.full_like(c["far_long.forward.action"], model.cfg.null_action)
    out_null = model(c["far_long.forward.input"], c["far_long.forward.timestep"], actions=null)
    assert (out_null[:, -1:] - c["far_long.forward.output"]).abs().max() > 1e-3


@torch.no_grad()
def test_dcae_is_diffusers_autoencoder_dc_with_the_reference_outputs(ref):
    c, vae = ref["cases"], tiny_dcae(ref)
    close(vae.encode(c["dcae.input"]).latent, c["dcae.latent"])
    close(vae.decode(c["dcae.latent"]).sample, c["dcae.decoded"])


def rollout(host: FarHost, prefix: str, cases, mode: str, actions=None):
    """The reference protocol: encode the context, then generate frame after frame from init_noise."""
    context, noise = cases[f"{prefix}.context_pixels"][0], cases[f"{prefix}.init_noise"][0]
    session = host.start(mode, torch.Generator().manual_seed(0))
    act = (lambda t: FrameInfo(t)) if actions is None else (lambda t: FrameInfo(t, int(actions[t])))
    for t, latent in enumerate(host.encode(context)):
        session.append(latent, act(t))
    latents = []
    for k in range(len(noise)):
        t = len(context) + k
        x = session.generate(act(t), noise=noise[k])
        session.append(x, act(t))
        latents.append(x)
    latents = torch.stack(latents)
    return latents, host.decode(latents)


@pytest.mark.parametrize("mode,key", [("recompute", "kv0"), ("kv", "kv1")])
def test_far_rollout_matches_the_reference_with_and_without_kv_cache(ref, mode, key):
    c, steps = ref["cases"], ref["configs"]["rollout"]["num_inference_steps"]
    host = FarHost(tiny_far(ref, "far_tiny"), tiny_dcae(ref), sampling_steps=steps)
    latents, pixels = rollout(host, "rollout", c, mode)
    close(latents, c[f"rollout.far.{key}.latents"][0])
    close(pixels, c[f"rollout.far.{key}.pixels"][0])


@pytest.mark.parametrize("mode", ["recompute", "kv"])
@pytest.mark.parametrize("guidance,key", [(1.0, "action"), (-1.0, "null_action")])
def test_far_long_rollout_matches_the_reference_with_actions_and_null_actions(ref, mode, guidance, key):
    c, steps = ref["cases"], ref["configs"]["rollout_long"]["num_inference_steps"]
    host = FarHost(tiny_far(ref, "far_long_tiny"), tiny_dcae(ref), sampling_steps=steps, guidance_scale=guidance)
    # 5 context frames reach the tiny window (4): kv mode must fall back to the reference's recompute
    with pytest.warns(UserWarning, match="short-term window") if mode == "kv" else nullcontext():
        latents, pixels = rollout(host, "rollout_long", c, mode, actions=c["rollout_long.action"][0])
    close(latents, c[f"rollout_long.{key}.latents"][0])
    close(pixels, c[f"rollout_long.{key}.pixels"][0])


def test_presets_have_exactly_the_official_checkpoint_keys_and_shapes():
    """Strict loading of the official checkpoints hinges on this (manifest of the real files)."""
    from diffusers import AutoencoderDC

    manifest = json.loads((REF / "manifest.json").read_text())
    with torch.device("meta"):  # shapes only: no 500 MB allocations
        models = {
            "FAR_B": FAR(VARIANTS["FAR_B_UCF101"].transformer),
            "FAR_B_label101": FAR(far_config("B", condition_cfg={"type": "label", "num_classes": 101})),
            "FAR_B_Long_action4": FAR(VARIANTS["FAR_B_Long_DMLab"].transformer),
            "DCAE_8x_c32": AutoencoderDC(**DCAE_8X_C32),
        }
    for name, model in models.items():
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert shapes == manifest[name]["state_dict"], name
        assert sum(p.numel() for p in model.parameters()) == manifest[name]["num_parameters"], name
    official = {k: v for k, v in manifest["DCAE_8x_c32"]["config"].items() if not k.startswith("_")}
    assert official == DCAE_8X_C32
    for name, preset in (("FAR_B", VARIANTS["FAR_B_UCF101"].transformer),
                         ("FAR_B_Long_action4", VARIANTS["FAR_B_Long_DMLab"].transformer)):
        for key, value in manifest[name]["config"].items():
            got = getattr(preset, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, (name, key)
