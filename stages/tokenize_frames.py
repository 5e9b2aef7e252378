"""DVC stage `tokenize`: data/frames.zarr + models/tokenizer -> data/latents.zarr."""

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.data.encode import encode_store
from pipeline.networks.tokenizer import KIND, build_tokenizer
from pipeline.training.checkpoint import checkpoint_hash, load_trained
from pipeline.training.device import pick_device


def main() -> None:
    params = load_params_or_exit()
    device = pick_device()
    tokenizer = load_trained(paths.TOKENIZER, KIND, build_tokenizer, device)
    summary = encode_store(paths.FRAMES, tokenizer, checkpoint_hash(paths.TOKENIZER), paths.LATENTS,
                           params.tokenize.batch_size, device)
    print(f"tokenize: {summary['frames']} frames of {summary['videos']} videos -> {paths.LATENTS}, "
          f"latents {summary['latent_shape']}")


if __name__ == "__main__":
    main()
