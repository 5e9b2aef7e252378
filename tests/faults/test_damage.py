"""Damaged inputs: a corrupted or truncated zarr shard, a truncated checkpoint. Every stage that
reads one ends with two lines naming the file and what to do (no traceback) and leaves its outputs
as they were; then `dvc repro` rebuilds what was damaged (the stage that wrote it reruns, or DVC
restores the file from its cache; nothing after it reruns) and the project ends with an
uninterrupted run's outputs."""

from __future__ import annotations

import importlib
import json
import re

import numpy as np
import pytest
import torch

from pipeline.runtime.errors import DEBUG_ENV
from tests.faults.harness import copy_project, diff, inject, leftovers, module, snapshot, stages_run
from tests.project_clone import ProjectClone

pytestmark = pytest.mark.faults

HINT = "(traceback: --debug or PIPELINE_DEBUG=1)"


@pytest.fixture
def project(reference, tmp_path, monkeypatch) -> ProjectClone:
    clone = ProjectClone(copy_project(reference.root, tmp_path / "project"))
    monkeypatch.chdir(clone.root)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    threads = torch.get_num_threads()
    yield clone
    torch.set_num_threads(threads)  # the benchmark stage sets its own


def stage_error(stage: str, capsys) -> list[str]:
    """Run a stage in this process (as `python -m stages.<x>` would); its message lines."""
    main = importlib.import_module(f"stages.{module(stage)}").main
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main()
        pytest.fail(f"{stage}: ended without an error")  # pragma: no cover
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith(f"{stage}: ") and "%|" not in line]


def shards(root, store: str, array: str) -> list:
    return sorted((root / "data" / store).glob(f"*/{array}/c/0/0/0/0"))


def damage_every_chunk(shard) -> None:
    """16 zero bytes in the middle of every compressed chunk of a shard file, as bad disk blocks
    would leave (so that every read of it, whatever frames it wants, meets damage). The shard
    index at the file's end: (offset, size) per chunk as little-endian uint64, then a CRC-32C."""
    meta = json.loads((shard.parents[4] / "zarr.json").read_text())  # the array's: .../frames/c/0/0/0/0
    n = meta["chunk_grid"]["configuration"]["chunk_shape"][0] // meta["codecs"][0]["configuration"]["chunk_shape"][0]
    data = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * n + 4) : -4]), dtype="<u8").reshape(n, 2)
    for offset, size in index:
        if offset != np.iinfo(np.uint64).max:  # a chunk that is there
            data[int(offset + size // 2) : int(offset + size // 2) + 16] = bytes(16)
    shard.write_bytes(bytes(data))


def heal(project, reference, writers: list[str]) -> str:
    """`dvc repro`: the stages that wrote the damaged files rerun (or DVC checks their outputs out of
    its cache), no other; the outputs are the reference's again. How it healed, for the log."""
    out = project.run("dvc", "repro", "--no-run-cache", timeout=600).stdout
    ran, restored = stages_run(out), re.findall(r"Stage '(\w+)' is cached - skipping run, checking out outputs", out)
    assert sorted(ran + restored) == sorted(writers), out
    assert diff(reference.outputs, snapshot(project.root)) == []
    assert leftovers(project.root) == []
    how = [f"reran {s}" for s in ran] + [f"restored {s}'s outputs from its cache" for s in restored]
    return "; `dvc repro` " + ", ".join(how)


def test_a_corrupted_frames_shard_is_named_by_every_stage_that_reads_it(project, reference, capsys):
    damaged = shards(project.root, "frames.zarr", "frames")
    for shard in damaged:
        damage_every_chunk(shard)
    faults = [inject("damaged file", f"data/frames.zarr ({len(damaged)} shards)", "16 zero bytes inside each chunk")]
    for stage in ("train_tokenizer", "tokenize", "benchmark"):
        err = stage_error(stage, capsys)
        assert len(err) == 2 and err[1] == f"{stage}: {HINT}", err
        shard = err[0].split("shard file ")[1].split(" ")[0]
        assert project.root / shard in damaged and err[0].startswith(f"{stage}: data/frames.zarr: video '")
        assert "is damaged" in err[0] and err[0].endswith("then rebuild it with `dvc repro -f extract`")
    assert diff(reference.outputs, snapshot(project.root)) == [f"{s.relative_to(project.root)}: differs" for s in damaged]
    faults[0].detail += heal(project, reference, ["extract"])
    faults[0].survived = True


def test_a_truncated_latents_shard_is_named_by_every_stage_that_reads_it(project, reference, capsys):
    damaged = shards(project.root, "latents.zarr", "latents")
    for shard in damaged:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    faults = [inject("damaged file", f"data/latents.zarr ({len(damaged)} shards)", "each shard cut to half")]
    for stage in ("train", "benchmark"):
        err = stage_error(stage, capsys)
        assert len(err) == 2 and err[1] == f"{stage}: {HINT}", err
        shard = err[0].split("shard file ")[1].split(" ")[0]
        assert project.root / shard in damaged and err[0].startswith(f"{stage}: data/latents.zarr: video '")
        assert err[0].endswith("then rebuild it with `dvc repro -f tokenize`")
    faults[0].detail += heal(project, reference, ["tokenize"])
    faults[0].survived = True


def test_a_truncated_checkpoint_is_named_by_every_stage_that_reads_it(project, reference, capsys):
    faults = []
    for directory, readers in (("models/dynamics", ["benchmark"]), ("models/tokenizer", ["tokenize", "benchmark"])):
        ema = project.root / directory / "ema.safetensors"
        ema.write_bytes(ema.read_bytes()[: ema.stat().st_size // 2])
        faults.append(inject("damaged file", f"{directory}/ema.safetensors", "cut to half"))
        for stage in readers:
            err = stage_error(stage, capsys)
            assert err == [f"{stage}: {directory}/ema.safetensors: damaged or truncated checkpoint file (SafetensorError: "
                           "Error while deserializing header: incomplete metadata, file not fully covered); delete "
                           f"{directory} and rerun `dvc repro` (the stage that writes it trains it again)",
                           f"{stage}: {HINT}"]
    # retrained byte for byte (or checked out of DVC's cache): tokenize and benchmark do not rerun
    faults[-1].detail += heal(project, reference, ["train_tokenizer", "train"])
    for fault in faults:
        fault.survived = True
