"""One typed schema (pydantic) for params.yaml and settings.yaml, deep-merged into one tree: a key may
live in either file, never in both. Every stage calls :func:`load_params` first, so a bad key fails
before any work, naming the key and its file. Why two files: docs/stages.md."""

from __future__ import annotations

import copy
import difflib
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PARAMS_FILE = "params.yaml"
SETTINGS_FILE = "settings.yaml"  # beside PARAMS_FILE


class ParamsError(ValueError):
    """params.yaml or settings.yaml is missing, unreadable or invalid; the message names every bad key."""


class Section(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------
def _sticky_prob():
    return Field(0.8, ge=0.0, lt=1.0, description="probability the random agent repeats its last action")


class AtariRecorderParams(Section):
    """`atari:<Game>`: ale-py at its native 60 Hz, played by a seeded sticky-random agent."""

    fps: int = Field(20, ge=1, le=60, description="recording rate; ALE runs at 60 Hz, so frameskip = 60/fps")
    sticky_prob: float = _sticky_prob()

    @field_validator("fps")
    @classmethod
    def _divides_60(cls, v: int) -> int:
        if 60 % v:
            raise ValueError(f"must divide 60 (ALE runs at 60 Hz), got {v}")
        return v


class VizdoomRecorderParams(Section):
    """`vizdoom:<scenario>`: ViZDoom at its native 35 tics/s, 160x120, no HUD."""

    frame_skip: int = Field(2, description="game tics per recorded frame: 35/frame_skip fps (2: 17.5 fps)")
    agent: Literal["explorer", "random"] = Field("explorer", description="explorer: revisits on purpose; random: sticky")
    sticky_prob: float = _sticky_prob()

    @field_validator("frame_skip")
    @classmethod
    def _whole_angle_units(cls, v: int) -> int:
        # A turn of 22.5 degrees a frame is 4096 of Doom's 2**16 angle units; split over the tics of a
        # frame it stays a whole number of units per tic (so turns come back exactly) only for 1, 2, 4, 8.
        if v not in (1, 2, 4, 8):
            raise ValueError(f"must be 1, 2, 4 or 8 (a 22.5-degree turn a frame must split into exact per-tic turns), got {v}")
        return v


class CrafterRecorderParams(Section):
    """`crafter`: the Crafter world, one step per frame, declared at 20 fps."""

    agent: Literal["explorer", "random"] = Field("explorer", description="explorer: revisits on purpose; random: sticky")
    sticky_prob: float = _sticky_prob()


class RecorderParams(Section):
    """The embedded recorders (`atari:<Game>`, `vizdoom:<scenario>`, `crafter` sources)."""

    episodes: int = Field(24, ge=1, description="episodes recorded per recorder source, one video each (capped by max_videos; "
                                                ">= 3 so every split gets one)")
    max_frames: int = Field(1000, ge=8, description="recorded frames per episode (an episode may end sooner)")
    crf: int = Field(18, ge=0, le=51, description="x264 constant rate factor of the recorded video (0 lossless, lower = better)")
    atari: AtariRecorderParams = Field(AtariRecorderParams(), description="the `atari:<Game>` recorder")
    vizdoom: VizdoomRecorderParams = Field(VizdoomRecorderParams(), description="the `vizdoom:<scenario>` recorder")
    crafter: CrafterRecorderParams = Field(CrafterRecorderParams(), description="the `crafter` recorder")


# What download.sources accepts (pipeline.data.sources.parse_source dispatches on the same prefixes).
SOURCE_PREFIXES = ("http://", "https://", "file://", "@", "atari:", "vizdoom:", "crafter")
SOURCE_HINT = (
    "expected an http(s):// or file:// URL, a YouTube @handle, atari:<Game>, vizdoom:<scenario> or crafter"
)


class DownloadParams(Section):
    """The `download` stage: where the raw videos come from (yt-dlp URLs or the embedded recorders)."""

    sources: list[str] = Field(min_length=1, description="http(s):// or file:// URLs, YouTube @handles, atari:<Game>, "
                                                         "vizdoom:<scenario> or crafter")
    max_videos: int = Field(24, ge=1, description="videos per source (playlist/channel entries, recorder episodes)")
    max_height: int = Field(360, ge=64, description="resolution cap handed to yt-dlp's format selector")
    archive: bool = Field(True, description="keep yt-dlp's download archive (data/raw/archive.txt): a rerun never fetches a "
                                            "video twice")
    sleep_interval: float = Field(0.0, ge=0.0, description="seconds yt-dlp sleeps before each download (0 = none; 5-30 "
                                                           "for YouTube channels)")
    max_sleep_interval: float = Field(0.0, ge=0.0, description="seconds; > sleep_interval makes the sleep random in "
                                                               "[sleep_interval, this]; 0 = a fixed sleep")
    retries: int = Field(3, ge=0, description="yt-dlp retries of a download, fragment, extractor call or file access")
    rate_limit: str | None = Field(None, description="e.g. '2M' (bytes/s, yt-dlp syntax)")
    cookies_file: str | None = Field(None, description="Netscape cookies.txt handed to yt-dlp (must exist); null = none")
    fail_fast: bool = Field(False, description="stop at the first failing video instead of recording the failure and "
                                               "going on")
    recorder: RecorderParams = Field(RecorderParams(), description="the embedded recorders (atari, vizdoom, crafter sources)")

    @field_validator("sources")
    @classmethod
    def _known_scheme(cls, sources: list[str]) -> list[str]:
        for i, s in enumerate(sources):
            if not s.startswith(SOURCE_PREFIXES):
                raise ValueError(f"[{i}] {s!r}: {SOURCE_HINT}")
        return sources

    @field_validator("rate_limit")
    @classmethod
    def _rate_syntax(cls, v: str | None) -> str | None:
        # yt-dlp's syntax (utils.parse_bytes): a number with an optional K/M/G... suffix (bytes/s).
        if v is not None and not re.fullmatch(r"\d+(\.\d+)?[kKmMgGtTpPeEzZyY]?", v):
            raise ValueError(f"expected bytes per second like '500K' or '2M', got {v!r}")
        return v

    @model_validator(mode="after")
    def _sleep_order(self) -> "DownloadParams":
        if self.max_sleep_interval and self.max_sleep_interval < self.sleep_interval:
            raise ValueError("max_sleep_interval must be >= sleep_interval")
        return self


# --------------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------------
class SplitParams(Section):
    """Shares of the videos (whole videos, never frames) in each split; they sum to 1."""

    train: float = Field(0.6, ge=0.0, le=1.0, description="share of videos the tokenizer and dynamics model train on")
    val: float = Field(0.15, ge=0.0, le=1.0, description="share of videos for validation during training")
    test: float = Field(0.25, ge=0.0, le=1.0, description="share of videos the benchmark's clips come from")

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitParams":
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class ExtractParams(Section):
    """The `extract` stage: decoding each raw video into square RGB frames in a zarr store."""

    fps: float | None = Field(None, gt=0, description="output rate; null = each video's own rate (no resampling)")
    size: int = Field(64, ge=8, description="square output side in pixels")
    resize_mode: Literal["center_crop", "letterbox", "squash"] = Field(
        "center_crop", description="center_crop: central square | letterbox: whole frame, black bars | squash: stretched")
    hud_masks: list[tuple[float, float, float, float]] = Field(
        default_factory=list,
        description="rectangles x0, y0, x1, y1 in normalised source coordinates, painted black before scaling",
    )
    skip_start_s: float = Field(0.0, ge=0.0, description="seconds dropped from the start of each video")
    skip_end_s: float = Field(0.0, ge=0.0, description="seconds dropped from the end of each video")
    max_frames: int = Field(0, ge=0, description="output frames kept per video (after the skips); 0 = no limit")
    splits: SplitParams = Field(SplitParams(), description="train/val/test shares of the videos")
    chunk_frames: int = Field(32, ge=1, description="frames per zarr chunk (also per decoder read)")
    shard_frames: int = Field(1024, ge=1, description="frames per zarr shard file, a multiple of chunk_frames (keep files few)")
    workers: int = Field(2, ge=1, description="videos decoded in parallel processes (1 = serial); with engine ray and "
                                              "no ray_address, the CPUs of the Ray instance the stage starts")
    engine: Literal["local", "ray"] = Field("local", description="local: a process pool on this machine | ray: one "
                                                                  "Ray task per video (the store on a shared filesystem)")
    ray_address: str | None = Field(None, description="engine ray: null starts a Ray instance here; 'auto' or host:port "
                                                      "joins a running cluster")
    ray_retries: int = Field(3, ge=0, description="engine ray: times a video's task is rerun after its worker died")

    EXECUTION: ClassVar[set[str]] = {"workers", "engine", "ray_address", "ray_retries"}  # how, not what: not in the store

    @field_validator("hud_masks")
    @classmethod
    def _masks_in_unit_square(cls, masks):
        for i, (x0, y0, x1, y1) in enumerate(masks):
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError(f"[{i}] {masks[i]}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return masks

    @model_validator(mode="after")
    def _shards_hold_whole_chunks(self) -> "ExtractParams":
        if self.shard_frames % self.chunk_frames:
            raise ValueError(
                f"shard_frames ({self.shard_frames}) must be a multiple of chunk_frames ({self.chunk_frames})"
            )
        return self


# --------------------------------------------------------------------------------------------
# the two training loops: tokenizer, and the dynamics model (model + train)
#
# The sections below have no defaults: params.yaml and settings.yaml are the one place their
# values live (tests build them from those files too, see tests/builders.py).
# --------------------------------------------------------------------------------------------
class TrainingLoopParams(Section):
    """What every training loop reads (pipeline.training): its length, AdamW with linear warm-up
    and cosine decay, gradient clipping, the EMA of the weights, and how often it logs,
    validates and checkpoints. The `tokenizer` and `train` sections both hold these keys."""

    steps: int = Field(ge=1, description="optimisation steps in all; the cosine decay ends at the last")
    lr: float = Field(gt=0, description="peak AdamW learning rate, reached after warm-up; decays to 0.1 x lr")
    warmup_steps: int = Field(ge=0, description="steps of linear learning-rate warm-up from ~0 to lr")
    weight_decay: float = Field(ge=0, description="AdamW weight decay (not on norms, biases and other 1-d parameters)")
    grad_clip: float = Field(gt=0, description="maximum global gradient norm; larger gradients are scaled down")
    ema_decay: float = Field(ge=0, lt=1, description="decay of the EMA of the weights per step; inference uses the EMA weights")
    log_every: int = Field(ge=1, description="steps between logged training points")
    val_every: int = Field(ge=1, description="steps between validations (and at the last step)")
    checkpoint_every: int = Field(ge=1, description="steps between checkpoints a killed run resumes from")
    loader_workers: int = Field(ge=0, description="DataLoader processes that read batches from the store ahead of the "
                                                  "steps (0: read in the training process); any number gives the same batches")


class TokenizerParams(TrainingLoopParams):
    """The frame tokenizer: its architecture, loss and training loop (stage `train_tokenizer`)."""

    arch: Literal["conv", "transformer"] = Field(description="conv: convolutional (CPU default) | transformer: "
                                                             "DreamerV4-style ViT (GPU)")
    latent_channels: int = Field(ge=1, description="channels of each latent frame (latent side = extract.size / downsample)")
    downsample: int = Field(ge=1, description="spatial compression factor (power of two)")
    base_channels: int = Field(ge=4, description="channels of the first conv stage, doubled per downsampling (conv arch)")
    patch_size: int = Field(ge=1, description="transformer arch; also the masking patch of both archs")
    dim: int = Field(ge=16, description="token width (transformer arch)")
    depth: int = Field(ge=1, description="blocks of the encoder and of the decoder (transformer arch)")
    heads: int = Field(ge=1, description="attention heads, dividing dim (transformer arch)")
    mask_max: float = Field(ge=0.0, lt=1.0, description="masking probability ~ U(0, mask_max)")
    lpips_weight: float = Field(ge=0.0, description="weight of the LPIPS term next to MSE (each RMS-normalised); 0 = MSE only")
    batch_size: int = Field(ge=1, description="frames per training step")
    frames_per_chunk: int = Field(ge=1, description="frames drawn from each chunk read (one decompressed chunk serves that "
                                                    "many; 1: every frame from its own chunk)")
    block_steps: int = Field(ge=1, description="steps whose frames are drawn together and shuffled across them, so that "
                                               "a batch holds frames of different chunks")
    val_frames: int = Field(ge=1, description="val frames (spread over the val videos) each validation scores")

    @field_validator("downsample")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if not _power_of_two(v):
            raise ValueError(f"must be a power of two, got {v}")
        return v

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "TokenizerParams":
        if self.arch == "transformer" and self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        return self


class TokenizeParams(Section):
    """The `tokenize` stage: encoding every frame with the trained tokenizer."""

    batch_size: int = Field(ge=1, description="frames per encoder call (memory only)")
    nproc_per_node: int = Field(ge=1, description="> 1: the stage relaunches itself under torchrun, videos sharded by rank")


class ModelParams(Section):
    """The dynamics transformer (pipeline.networks.dynamics builds its config from these)."""

    dim: int = Field(ge=8, description="token width; >= latent_channels * patch_size**2 or the patch embedding is a bottleneck")
    depth: int = Field(ge=1, description="transformer blocks")
    heads: int = Field(ge=1, description="attention heads per block (divides dim)")
    kv_heads: int = Field(
        ge=1, description="key/value heads, dividing heads; < heads: grouped-query attention (a smaller KV cache)")
    patch_size: int = Field(ge=1, description="side of the latent patch per spatial token")
    num_registers: int = Field(ge=0, description="learned register tokens per frame")
    temporal_every: int = Field(ge=1, description="causal temporal attention every N blocks, spatial attention in the others")
    mlp_ratio: float = Field(gt=0, description="MLP width / dim (SwiGLU: its hidden layer gets 2/3 of that width)")
    logit_softcap: float = Field(ge=0, description="tanh soft cap of the attention logits; 0 = none (fused attention kernels)")
    k_max: int = Field(ge=1, description="shortcut step sizes d = 1, 1/2, ..., 1/k_max (a power of two)")
    temporal_first: bool = Field(description="the first block attends across frames (else within a frame)")
    pose_conditioning: bool = Field(description="condition frames on the recorded pose, where the data has one")
    pose_bias: float = Field(ge=0, description="initial rate of the temporal heads' pose-distance bias; 0 = none")
    clean_bias: float = Field(ge=0, description="initial rate of the temporal heads' clean-context bias; 0 = none")
    pose_recall: float = Field(ge=0, description="initial rate of the pose recall (each frame gets the earlier view "
                                                 "recalled by pose, as an input and a gated copy); 0 = none")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelParams":
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if not _power_of_two(self.k_max):
            raise ValueError(f"k_max must be a power of two, got {self.k_max}")
        if self.temporal_every > self.depth:
            raise ValueError(f"temporal_every ({self.temporal_every}) > depth ({self.depth}): no temporal layer")
        return self


class TrainParams(TrainingLoopParams):
    """Training the dynamics model (stage `train`): batches, shortcut forcing and the loop."""

    seq_len_short: int = Field(ge=1, description="frames per window of the short batches (also the val windows)")
    seq_len_long: int = Field(ge=1, description="frames per window of the long batches (>= seq_len_short)")
    batch_size_short: int = Field(ge=1, description="windows per short batch; global batch (split over DDP processes)")
    batch_size_long: int = Field(ge=1, description="windows per long batch; global batch (split over DDP processes)")
    long_ratio: float = Field(ge=0, le=1, description="probability that a step's batch is long")
    gapped_ratio: float = Field(ge=0, le=1, description="probability that a step's batch is gapped: batch_size_short "
                                                        "windows of gapped_span frames, seq_len_short of each kept (the "
                                                        "newest half and random older ones) at their own times")
    gapped_span: int = Field(ge=1, description="frames a gapped window spans (>= seq_len_short): the time distances the "
                                               "model learns, as long as the longest history a rollout keeps")
    stride: int = Field(ge=1, description="frames between the starts of consecutive training windows of a video")
    bootstrap_fraction: float = Field(ge=0, le=1, description="share of each batch with shortcut targets")
    bootstrap_space: Literal["velocity", "x"] = Field(description="space the shortcut target averages the two half "
                                                                  "steps in: velocity (DreamerV4 eq. 7) | x (ablation)")
    single_frame_fraction: float = Field(ge=0, le=1, description="probability that a sequence is trained as independent "
                                                                  "single frames")
    context_fraction: float = Field(ge=0, le=1, description="share of frames trained as clean-ish context (tau <= 2/k_max)")
    history_dropout: float = Field(ge=0, le=1, description="share of sequences trained with a gapped history")
    val_taus: list[float] = Field(description="noise levels in [0, 1) of the validation's teacher-forced one-step PSNR")
    precision: Literal["auto", "fp32", "bf16"] = Field(description="auto: bf16 autocast on GPUs that support it, else fp32 "
                                                                   "| fp32: never autocast | bf16: always")
    nproc_per_node: int = Field(ge=1, description="> 1: the stage relaunches itself under torchrun (DDP)")

    @model_validator(mode="after")
    def _lengths(self) -> "TrainParams":
        if self.seq_len_long < self.seq_len_short:
            raise ValueError(
                f"seq_len_long ({self.seq_len_long}) must be >= seq_len_short ({self.seq_len_short})"
            )
        if self.gapped_span < self.seq_len_short:
            raise ValueError(f"gapped_span ({self.gapped_span}) must be >= seq_len_short ({self.seq_len_short})")
        if self.long_ratio + self.gapped_ratio > 1:
            raise ValueError(f"long_ratio ({self.long_ratio}) + gapped_ratio ({self.gapped_ratio}) must be <= 1")
        if any(not 0 <= t < 1 for t in self.val_taus):
            raise ValueError(f"val_taus must lie in [0, 1), got {self.val_taus}")
        return self


# --------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------
class WorkloadParams(Section):
    """One benchmark workload: a clip of context frames given, then frames predicted."""

    context: int = Field(ge=1, description="ground-truth frames a rollout starts from")
    predict: int = Field(ge=1, description="frames generated after the context, each scored against the ground truth")
    revisit_gap: int | None = Field(
        None, ge=1, description="clips placed where the predicted frames return to views the context last showed at "
                                "least this many frames before the prediction (found from poses); null: windows at random")
    policies: list[str] | None = Field(
        None, min_length=1, description="the policies run on this workload (a subset of benchmark.policies); null: all")


class FarParams(Section):
    """FAR as host: official weights from a directory (default $FAR_WEIGHTS_DIR) or the hub."""

    weights_dir: str | None = Field(None, description="directory of the official checkpoints (their relative paths); "
                                                      "null = $FAR_WEIGHTS_DIR")
    variant: Literal["FAR_B_UCF101", "FAR_B_Long_DMLab"] = Field(
        "FAR_B_UCF101",
        description="FAR_B_UCF101: unconditional, UCF-101 | FAR_B_Long_DMLab: FAR_Long, action-conditioned, DMLab",
    )
    dmlab_npz: str | None = Field(None, description="directory of DMLab episodes in FAR's npz format")
    sampling_steps: int = Field(20, ge=1, description="flow-matching Euler steps per generated frame")
    allow_hub_download: bool = Field(False, description="fetch missing checkpoints from the Hugging Face hub (needs network)")
    guidance_scale: float = Field(
        1.0, description="FAR_Long actions: 1 = conditioned, -1 = null actions, > 1 = CFG (the reference's DMLab eval: 1.5)"
    )


class BenchmarkParams(Section):
    """The `benchmark` stage: rollouts of every retention policy under every budget, mode and workload."""

    host: Literal["pipeline", "far"] = Field(
        "pipeline", description="pipeline: the tokenizer + dynamics model trained here | far: FAR's official weights")
    protocol: Literal["default", "harness"] = Field(
        "default", description="default: plan before every frame | harness: the published task's loop")
    policies: list[str] = Field(
        default_factory=lambda: ["recent_window", "packcache", "causalcache_vdm", "flowcache", "full_history",
                                 "sink_recent", "h2o", "tova", "rkv", "random", "pose_retrieval", "pose_coverage",
                                 "oracle_copy"],
        min_length=1,
        description="retention policies: built-in names, module:Class or path/to/file.py:Class",
    )
    modes: list[Literal["recompute", "kv"]] = Field(
        default_factory=lambda: ["kv"], min_length=1,
        description="kv: evicted frames leave the KV cache | recompute: kept latents re-run for every frame")
    workloads: dict[str, WorkloadParams] = Field(
        default_factory=lambda: {
            "short": WorkloadParams(context=5, predict=11),
            "long": WorkloadParams(context=36, predict=36),
            "revisit": WorkloadParams(context=192, predict=16, revisit_gap=64, policies=[
                "full_history", "sink_recent", "h2o", "tova", "rkv", "random", "pose_retrieval", "pose_coverage",
                "oracle_copy"]),
        },
        min_length=1,
        description="name -> context and predicted frames of its clips",
    )
    budgets: dict[str, int | None] = Field(
        default_factory=lambda: {"full": None, "medium": 8, "tight": 4},
        min_length=1,
        description="name -> max_frames (null = unlimited)",
    )
    n_clips: int = Field(30, ge=1, description="clips per workload, drawn from the test videos")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1,
                             description="sampling seeds (generation noise): every rollout runs once per seed")
    sampling_steps: int = Field(4, ge=1, description="K shortcut Euler steps per generated frame (step d = 1/K; a power of "
                                                     "two <= model.k_max)")
    tau_ctx: float = Field(0.1, ge=0, lt=1,
                           description="noise level the history frames are corrupted to, as in training (0 = clean)")
    copy_gate_shift: float = Field(1.5, description="logit added to pose recall's copy gate when generating")
    media_clips: int = Field(2, ge=0, description="first clips shown in the reports/benchmark/*.gif videos; 0 = none")
    cpu_threads: int = Field(0, ge=0, description="torch threads on CPU; 0 = torch's default")
    batch_size: int = Field(16, ge=1, description="clips of one cell per host call (1: one rollout at a time)")
    nproc_per_node: int = Field(1, ge=1, description="> 1: the stage relaunches itself under torchrun, clips sharded by rank")
    far: FarParams = Field(FarParams(), description="the FAR host (host: far only)")

    @field_validator("budgets")
    @classmethod
    def _positive(cls, budgets: dict[str, int | None]) -> dict[str, int | None]:
        for name, n in budgets.items():
            if n is not None and n < 1:
                raise ValueError(f"{name}: max_frames must be >= 1 or null, got {n}")
        return budgets

    @field_validator("sampling_steps")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if not _power_of_two(v):
            raise ValueError(f"must be a power of two (a shortcut step d = 1/K), got {v}")
        return v

    @model_validator(mode="after")
    def _workload_policies(self) -> "BenchmarkParams":
        for name, w in self.workloads.items():
            unknown = [p for p in w.policies or [] if p not in self.policies]
            if unknown:
                raise ValueError(f"workloads.{name}.policies: {', '.join(unknown)} not in benchmark.policies")
        return self

    @model_validator(mode="after")
    def _every_process_has_clips(self) -> "BenchmarkParams":
        if self.nproc_per_node > self.n_clips:
            raise ValueError(f"nproc_per_node ({self.nproc_per_node}) > n_clips ({self.n_clips}): "
                             "processes without a clip (the clips are sharded by rank)")
        return self


# --------------------------------------------------------------------------------------------
# the whole file
# --------------------------------------------------------------------------------------------
class Params(Section):
    """params.yaml + settings.yaml. Every section is required; the download, extract and benchmark
    sections keep defaults for the partial configs their tests build, equal to the files' values (a
    test checks every one), the training sections have none."""

    seed: int = Field(description="every random choice (agent, splits, init, batches, noise, clips) derives from this")
    download: DownloadParams = Field(description="stage download: the raw videos")
    extract: ExtractParams = Field(description="stage extract: frames from the raw videos")
    tokenizer: TokenizerParams = Field(description="stage train_tokenizer: the frame tokenizer")
    tokenize: TokenizeParams = Field(description="stage tokenize: latents of every frame")
    model: ModelParams = Field(description="the dynamics transformer's architecture")
    train: TrainParams = Field(description="stage train: the dynamics model's training")
    benchmark: BenchmarkParams = Field(description="stage benchmark: the frame-retention rollout benchmark")

    @model_validator(mode="after")
    def _across_sections(self) -> "Params":
        errors = []
        if self.extract.size % self.tokenizer.downsample:
            errors.append(
                f"tokenizer.downsample: {self.tokenizer.downsample} does not divide extract.size ({self.extract.size})"
            )
        if self.extract.size % self.tokenizer.patch_size:
            errors.append(
                f"tokenizer.patch_size: {self.tokenizer.patch_size} does not divide extract.size ({self.extract.size})"
            )
        latent_side = self.extract.size // self.tokenizer.downsample
        if latent_side % self.model.patch_size:
            errors.append(
                f"model.patch_size: {self.model.patch_size} does not divide the latent side ({latent_side})"
            )
        if self.benchmark.sampling_steps > self.model.k_max:
            errors.append(
                f"benchmark.sampling_steps: {self.benchmark.sampling_steps} > model.k_max ({self.model.k_max})"
            )
        if errors:
            raise ValueError("; ".join(errors))
        return self


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys at `loc` (a path of field names) in the schema, for suggestions."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _format_error(err: dict, origin=lambda loc: None) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "<top>"
    where = f" [{origin(loc)}]" if origin(loc) else ""
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _field_names(Params, loc[:-1]), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{key}: unknown key{hint}{where}"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("value_error", "assertion_error"):
        msg += f" (got {err.get('input')!r})"
    return f"{key}: {msg}{where}"


def parse_params(raw: Any, source: str = PARAMS_FILE, origin=lambda loc: None) -> Params:
    """Validate one parameter tree; `origin(loc)` names the file a key path came from, if known."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e, origin) for e in exc.errors()]
        raise ParamsError(f"{source}: invalid params\n  " + "\n  ".join(lines)) from None


def _holds(tree: Any, loc: tuple) -> bool:
    for part in loc:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def merge_files(files: dict[str, dict]) -> dict:
    """Deep-merge parameter trees (file name -> tree) into one; a key path set in two files (or a
    section in one and a value in another) raises ParamsError naming the key and both files."""
    merged: dict = {}
    clashes = []

    def merge(into: dict, tree: dict, name: str, loc: tuple) -> None:
        for key, value in tree.items():
            path = (*loc, key)
            if isinstance(value, dict) and value and isinstance(into.get(key), dict):
                merge(into[key], value, name, path)
            elif key in into:
                first = next(n for n, t in files.items() if _holds(t, path))
                clashes.append(f"{'.'.join(map(str, path))}: set in both {first} and {name} (keep one)")
            else:
                into[key] = copy.deepcopy(value)

    for name, tree in files.items():
        merge(merged, tree, name, ())
    if clashes:
        raise ParamsError(f"{' + '.join(files)}: invalid params\n  " + "\n  ".join(clashes))
    return merged


def parse_param_files(files: dict[str, Any]) -> Params:
    """Validate the merged trees of several files (name -> parsed YAML); errors name each key's file."""
    for name, tree in files.items():
        if not isinstance(tree, dict):
            raise ParamsError(f"{name}: expected a mapping at the top level, got {type(tree).__name__}")
    merged = merge_files(files)

    def origin(loc: tuple) -> str | None:
        # the file that spells out this key path (a section can span both files: then none)
        holders = [name for name, tree in files.items() if _holds(tree, loc)]
        return holders[0] if len(holders) == 1 and len(files) > 1 else None

    return parse_params(merged, " + ".join(files), origin)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


def read_param_files(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml at `path` and, if present, settings.yaml beside it: file name -> parsed YAML."""
    path = Path(path)
    files = {path.name: _read_yaml(path)}
    settings = path.with_name(SETTINGS_FILE)
    if settings.is_file() and settings != path:
        files[settings.name] = _read_yaml(settings) or {}
    return files


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml and the settings.yaml beside it (if any); raises ParamsError
    naming each bad key."""
    return parse_param_files(read_param_files(path))


def load_params_or_exit(path: str | Path = PARAMS_FILE) -> Params:
    """For stages: bad params end the process with the message alone (no traceback)."""
    try:
        return load_params(path)
    except ParamsError as exc:
        raise SystemExit(str(exc)) from None
