"""How a stage runs: one process or several (``launch``: the torchrun relaunch; ``distributed``:
ranks, the process group and its collectives) and how it ends on a user's error (``errors``).
Every package may use it; it uses none of them."""
