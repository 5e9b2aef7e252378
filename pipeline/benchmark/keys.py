"""Names in metrics/benchmark.json that its writer and its readers (the report) share."""

PAIRED_BASELINE = "full_history"  # every policy's PSNR is also reported as a paired gap to this one
GAP_KEY = f"psnr_vs_{PAIRED_BASELINE}"
MEMORY_GAIN_KEY = "memory_gain"  # full_history: unlimited budget minus this budget (keep the newest B), paired
RANDOM_BASELINE = "random"  # the lower bound: every policy's PSNR is also reported as a paired gap to it
RANDOM_GAP_KEY = f"psnr_vs_{RANDOM_BASELINE}"
GAP_CLOSED_KEY = "gap_closed"  # (policy - newest B) / (full history - newest B), paired over clips
HINDSIGHT_POLICIES = ("oracle_copy",)  # references that run as policies but read the ground truth: never "best"
GAP_BINS = ((1, 8), (9, 32), (33, 63), (64, 127), (128, 255), (256, 10**9))  # frames since a view was last seen
GAP_LABELS = [*(f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}" for lo, hi in GAP_BINS), "new"]  # "new": never seen
