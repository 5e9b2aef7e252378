"""DVC stage `tokenize`: data/frames.zarr + models/tokenizer -> data/latents.zarr. With
tokenize.nproc_per_node > 1 it relaunches itself under torchrun: the videos are sharded by rank
and rank 0 renames the store into place once all are written (pipeline.data.encode)."""

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.launch import relaunch_under_torchrun


def main() -> None:
    params = load_params_or_exit()
    relaunch_under_torchrun(params.tokenize.nproc_per_node, "stages.tokenize_frames")
    import torch  # after the relaunch: torch loads once per rank

    from pipeline.data.encode import encode_store
    from pipeline.networks.tokenizer import KIND, build_tokenizer
    from pipeline.training.checkpoint import checkpoint_hash, load_trained
    from pipeline.training.device import pick_device
    from pipeline.training.distributed import close_distributed, init_distributed

    d = init_distributed()
    device = d.device if d.world > 1 else pick_device()
    if device.type == "cpu" and d.world > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // d.world))  # the ranks share the cores
    tokenizer = load_trained(paths.TOKENIZER, KIND, build_tokenizer, device)
    summary = encode_store(paths.FRAMES, tokenizer, checkpoint_hash(paths.TOKENIZER), paths.LATENTS,
                           params.tokenize.batch_size, device, dist=d)
    close_distributed(d)
    if d.main:
        print(f"tokenize: {summary['frames']} frames of {summary['videos']} videos -> {paths.LATENTS}, "
              f"latents {summary['latent_shape']}" + (f" ({d.world} processes)" if d.world > 1 else ""))


if __name__ == "__main__":
    main()
