"""DVC stage tokenize: data/frames.zarr + models/tokenizer -> data/latents.zarr."""

from pipeline.config import load_params_or_exit
from pipeline.tokenize import encode_store
from pipeline.training import pick_device

FRAMES = "data/frames.zarr"
TOKENIZER = "models/tokenizer"
OUT = "data/latents.zarr"


def main() -> None:
    params = load_params_or_exit()
    summary = encode_store(FRAMES, TOKENIZER, OUT, params.tokenizer.encode_batch_size, pick_device())
    print(f"tokenize: {summary['frames']} frames of {summary['videos']} videos -> {OUT}, latents {summary['latent_shape']}")


if __name__ == "__main__":
    main()
