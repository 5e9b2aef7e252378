"""Training: two loops, :mod:`~pipeline.training.tokenizer` and :mod:`~pipeline.training.dynamics`,
on one skeleton: :mod:`~pipeline.training.run` (TrainingRun: resume, checkpoints, DVCLive, the
metrics file), :mod:`~pipeline.training.optim` (Optimization: AdamW, schedule, clipping, EMA),
DDP through :mod:`pipeline.runtime.distributed`, :mod:`~pipeline.training.seeding`,
:mod:`~pipeline.training.device` and :mod:`~pipeline.training.checkpoint` (safetensors + JSON)."""
