"""Names in metrics/benchmark.json that its writer and its readers (the report) share."""

PAIRED_BASELINE = "full_history"  # every policy's PSNR is also reported as a paired gap to this one
GAP_KEY = f"psnr_vs_{PAIRED_BASELINE}"
MEMORY_GAIN_KEY = "memory_gain"  # full_history: unlimited budget minus this budget (keep the newest B), paired
