"""DVC stage train_tokenizer: data/frames.zarr -> models/tokenizer, metrics/tokenizer.json,
dvclive/tokenizer."""

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.training.tokenizer import train_tokenizer


def main() -> None:
    params = load_params_or_exit()
    metrics = train_tokenizer(params.tokenizer, params.seed, frames=paths.FRAMES, out_dir=paths.TOKENIZER,
                              live_dir=paths.TOKENIZER_LIVE, metrics_path=paths.TOKENIZER_METRICS)
    v, p = metrics["val"], metrics["persistence"]
    print(f"train_tokenizer: val PSNR {v['psnr']:.2f} dB (persistence {p['psnr']:.2f} dB), "
          f"SSIM {v['ssim']:.4f}, LPIPS {v['lpips']:.4f}; latents {metrics['latent_shape']}")


if __name__ == "__main__":
    main()
