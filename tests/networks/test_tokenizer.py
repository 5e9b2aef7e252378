import json

import pytest
import torch

from pipeline.networks.checkpoint import CheckpointError, load_trained, save_checkpoint
from pipeline.networks.tokenizer import (
    Upsample2x,
    build_tokenizer,
    random_patch_mask,
    regrid,
    tokenizer_config,
)
from pipeline.training.optim import EMA
from tests.builders import params_section

CONV = params_section("tokenizer", arch="conv", base_channels=8, latent_channels=4, downsample=4, patch_size=8)
TRANSFORMER = params_section("tokenizer", arch="transformer", latent_channels=4, downsample=4, patch_size=8, dim=32,
                             depth=1, heads=2)


@pytest.mark.parametrize("params", [CONV, TRANSFORMER], ids=["conv", "transformer"])
def test_encode_decode_shapes_and_ranges(params):
    torch.manual_seed(0)
    config = tokenizer_config(params, (32, 48))
    model = build_tokenizer(config).eval()
    x = torch.rand(3, 3, 32, 48)
    z = model.encode(x)
    assert z.shape == (3, 4, 8, 12) == (3, *config["latent_shape"])
    assert z.abs().max() <= 1  # tanh bottleneck
    y = model.decode(z)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("params", [CONV, TRANSFORMER], ids=["conv", "transformer"])
def test_masked_patches_change_the_latents_and_gradients_flow(params):
    torch.manual_seed(0)
    model = build_tokenizer(tokenizer_config(params, 32))
    x = torch.rand(2, 3, 32, 32)
    mask = random_patch_mask(2, model.mask_grid, 0.9)
    assert mask.shape == (2, 4, 4)
    assert not torch.equal(model.encode(x, mask), model.encode(x))
    recon, _ = model(x, mask)
    recon.square().mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_random_patch_mask_is_off_at_zero_and_bounded_by_mask_max():
    assert random_patch_mask(4, (8, 8), 0.0) is None
    torch.manual_seed(0)
    fractions = random_patch_mask(2000, (8, 8), 0.5).float().mean((1, 2))
    assert fractions.max() < 0.75 and 0.2 < fractions.mean() < 0.3  # p ~ U(0, 0.5): mean 0.25


def test_build_rejects_inconsistent_configs_by_name():
    config = tokenizer_config(CONV, 32)
    with pytest.raises(ValueError, match="latent_shape"):
        build_tokenizer({**config, "latent_shape": [4, 16, 16]})
    with pytest.raises(ValueError, match="missing keys.*base_channels"):
        build_tokenizer({k: v for k, v in config.items() if k != "base_channels"})
    with pytest.raises(ValueError, match="arch"):
        build_tokenizer({**config, "arch": "vqgan"})
    with pytest.raises(ValueError, match=r"unexpected keys \['dim'\]"):
        build_tokenizer({**config, "dim": 32})  # a conv tokenizer has no transformer width
    with pytest.raises(ValueError, match=r"expects pixels \(B, 3, 32, 32\)"):
        build_tokenizer(config).encode(torch.rand(1, 3, 64, 64))


def _save(directory, model, config):
    save_checkpoint(directory, kind="tokenizer", config=config, model=model, ema=EMA(model, 0.9), step=1)


def test_load_tokenizer_is_strict_eval_and_uses_ema_weights(tmp_path):
    torch.manual_seed(0)
    config = tokenizer_config(CONV, 32)
    model = build_tokenizer(config)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the raw weights drift away from the EMA copy
    save_checkpoint(tmp_path / "tok", kind="tokenizer", config=config, model=model, ema=ema, step=1)
    loaded = load_trained(tmp_path / "tok", "tokenizer", build_tokenizer)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.encode(x), ema.module.eval().encode(x))


def test_checkpoint_with_mismatched_config_fails_clearly(tmp_path):
    config = tokenizer_config(CONV, 32)
    _save(tmp_path / "tok", build_tokenizer(config), config)
    header = json.loads((tmp_path / "tok" / "config.json").read_text())
    header["config"]["base_channels"] = 16
    (tmp_path / "tok" / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="does not match the model built from its config.*shape mismatch"):
        load_trained(tmp_path / "tok", "tokenizer", build_tokenizer)
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        load_trained(tmp_path / "nothing", "tokenizer", build_tokenizer)


def test_regrid_averages_onto_a_coarser_grid_and_repeats_onto_a_finer_one():
    tokens = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, one channel
    coarse = regrid(tokens, (4, 4), (2, 2))
    assert coarse.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert regrid(coarse, (2, 2), (4, 4)).reshape(4, 4)[:2, :2].flatten().tolist() == [2.5] * 4


@pytest.mark.parametrize("patch_size", [4, 8])  # one patch per latent, and one patch over four latents
def test_transformer_latents_have_a_local_path_to_the_patches_under_them(patch_size):
    # With every block's output zeroed (the residual stream only), what reaches a latent token
    # is its local path: changing the top-left patch must change only the latents it covers.
    cfg = tokenizer_config(params_section("tokenizer", arch="transformer", dim=32, depth=1, heads=4,
                                          patch_size=patch_size, latent_channels=4, downsample=4), 32)  # fmt: skip
    torch.manual_seed(0)
    tok = build_tokenizer(cfg).eval()
    with torch.no_grad():
        for block in list(tok.encoder.blocks) + list(tok.decoder.blocks):
            block.proj.weight.zero_(), block.proj.bias.zero_(), block.mlp[2].weight.zero_(), block.mlp[2].bias.zero_()
        x = torch.rand(1, 3, 32, 32)
        y = x.clone()
        y[:, :, :patch_size, :patch_size] = 1 - y[:, :, :patch_size, :patch_size]
        changed = (tok.encode(x) - tok.encode(y)).abs().amax(dim=1)[0] > 1e-6  # (8, 8) latent grid
    covered = torch.zeros(8, 8, dtype=torch.bool)
    covered[: patch_size // 4, : patch_size // 4] = True
    assert torch.equal(changed, covered)


def test_the_decoders_upsampling_gives_nn_upsamples_values_and_gradients():
    x = torch.randn(3, 5, 4, 6, requires_grad=True)
    ours, torchs = Upsample2x()(x), torch.nn.Upsample(scale_factor=2, mode="nearest")(x)
    assert ours.shape == (3, 5, 8, 12) and torch.equal(ours, torchs)
    g = torch.randn_like(ours)
    (a,) = torch.autograd.grad(ours, x, g)
    (b,) = torch.autograd.grad(torchs, x, g)
    torch.testing.assert_close(a, b)
