"""Training: the tokenizer and dynamics loops on one skeleton, :mod:`~pipeline.training.run` (resume,
checkpoints, DVCLive, metrics) and :mod:`~pipeline.training.optim` (AdamW, schedule, clipping, EMA)."""
