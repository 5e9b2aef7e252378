"""The pixel convention every model and metric here uses: float (N, 3, H, W) in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch


def to_pixels(frames: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) frames -> float (N, 3, H, W) in [0, 1] on `device`."""
    frames = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    return frames.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
