"""TrainingRun: resume, checkpoints, DVCLive and the metrics file, shared by both training loops.

A run resumes its checkpoint only if the fingerprint matches and it is unfinished, else starts fresh;
a resumed run ends with byte-identical checkpoints and plots (docs/models.md#training-loops).
With several processes rank 0 alone logs and writes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from pipeline.atomic import remove_stale_tmp, write_json
from pipeline.networks.checkpoint import (
    CheckpointError,
    NoCheckpointError,
    load_training_state,
    read_config,
    save_checkpoint,
)
from pipeline.runtime.distributed import Dist, barrier
from pipeline.training.optim import Optimization

if TYPE_CHECKING:
    from pipeline.config import TrainingLoopParams


def run_fingerprint(params: dict, data_identity: str) -> str:
    """What a checkpoint must match to be resumed: the params a run reads and its data store's identity."""
    blob = json.dumps({"params": params, "data": data_identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class TrainingRun:
    """Resume, checkpoints, DVCLive and metrics of one run. `kind`: the network module's KIND; `loop`: the
    params with steps and cadences; `dist`: the processes."""

    def __init__(self, kind: str, *, loop: TrainingLoopParams, fingerprint: str, out_dir: str | Path,
                 live_dir: str | Path, metrics_path: str | Path, dist: Dist = Dist()):  # noqa: B008 # fmt: skip
        self.kind, self.steps, self.fingerprint = kind, loop.steps, fingerprint
        self.out_dir, self.live_dir, self.metrics_path = Path(out_dir), Path(live_dir), Path(metrics_path)
        self.dist, self.device = dist, dist.device
        self.resumed_from: list[int] = []  # checkpoint steps this run's result continued from
        self.live = None
        if dist.main:  # leftovers of a run killed while saving a checkpoint or writing its metrics
            remove_stale_tmp(self.out_dir.parent, self.out_dir.name)
            remove_stale_tmp(self.metrics_path.parent, self.metrics_path.name)

    @property
    def main(self) -> bool:
        return self.dist.main

    def resume(self, model: nn.Module, opt: Optimization) -> tuple[int, dict]:
        """Load out_dir's checkpoint into `model` and `opt` if it is this run's and unfinished: (step, extra).
        Otherwise (0, {}) and nothing loaded (a damaged checkpoint: with a warning)."""
        try:
            header = read_config(self.out_dir, self.kind)
            if header["extra"].get("fingerprint") != self.fingerprint or header["step"] >= self.steps:
                return 0, {}
            step, extra = load_training_state(self.out_dir, kind=self.kind, model=model, ema=opt.ema,
                                              optimizer=opt.optimizer, scheduler=opt.scheduler)
        except NoCheckpointError:
            return 0, {}
        except CheckpointError as exc:  # damaged, or another network's: nothing to resume
            if self.main:
                print(f"{self.kind}: not resuming, training from step 0: {getattr(exc, 'problem', exc)}", file=sys.stderr)
            return 0, {}
        self.resumed_from = [*extra.pop("resumed_from", []), step]
        if self.main:
            print(f"{self.kind}: resuming from step {step}/{self.steps} ({self.out_dir})")
        return step, extra

    def open_live(self, params: dict | None = None) -> None:
        """Start DVCLive (rank 0), plots truncated to the resumed step; `params` logged beside them."""
        if self.main:
            self.live = open_live(self.live_dir, self.resumed_from[-1] if self.resumed_from else None)
            if params is not None:
                self.live.log_params(params)

    def due(self, step: int, every: int) -> bool:
        """Whether `step` (steps done) is on the `every` grid, or the last step."""
        return step % every == 0 or step == self.steps

    def log(self, step: int, values: dict[str, float]) -> None:
        """One DVCLive point per value, at `step` (rank 0; nothing if `values` is empty)."""
        if not (self.main and values):
            return
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def save(self, step: int, *, config: dict, model: nn.Module, opt: Optimization, extra: dict) -> None:
        """Checkpoint after `step` steps (rank 0 writes, all wait). The last one carries no resume log, so it
        is the same whether or not the run was resumed."""
        if self.main:
            train_extra = {"resumed_from": self.resumed_from} if step < self.steps else None
            save_checkpoint(self.out_dir, kind=self.kind, config=config, model=model, ema=opt.ema,
                            optimizer=opt.optimizer, scheduler=opt.scheduler, step=step,
                            extra={"fingerprint": self.fingerprint, **extra}, train_extra=train_extra)
        barrier(self.dist)

    def finish(self, metrics: dict) -> dict:
        """Write the metrics file and close DVCLive (rank 0); the metrics, or {} on other ranks."""
        if not self.main:
            return {}
        write_json(self.metrics_path, metrics)
        self.live.end()
        return metrics


# ---------------------------------------------------------------------------------------------
# DVCLive plots across resumes
# ---------------------------------------------------------------------------------------------
def truncate_live(live_dir: Path, step: int) -> None:
    """Drop DVCLive rows after `step`, rewritten as DVCLive writes them (tabs, os.linesep), so a resumed
    run's files equal an uninterrupted one's."""
    for tsv in (Path(live_dir) / "plots" / "metrics").rglob("*.tsv"):
        with tsv.open(newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows, fields = list(reader), reader.fieldnames
        if not fields:
            continue
        with tsv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, delimiter="\t", lineterminator=os.linesep)
            w.writeheader()
            w.writerows(r for r in rows if int(r["step"]) <= step)


def open_live(live_dir: str | Path, resume_step: int | None):
    """A DVCLive logger: fresh plots (`resume_step` None) or those up to the step a resumed run restarts from."""
    from dvclive import Live

    if resume_step is None:
        shutil.rmtree(live_dir, ignore_errors=True)
    else:
        truncate_live(Path(live_dir), resume_step)
    return Live(str(live_dir), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=None, report=None)
