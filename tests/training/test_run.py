"""The training skeleton: fingerprints, cadence, DVCLive files across resumes, seeded generators."""

import os

import torch

from pipeline.runtime.seeding import seeded_generator
from pipeline.training.run import TrainingRun, run_fingerprint, truncate_live
from tests.builders import params_section


def test_the_fingerprint_changes_with_the_params_and_with_the_data():
    a = run_fingerprint({"train": {"lr": 0.002}, "seed": 0}, "store-1")
    assert a == run_fingerprint({"seed": 0, "train": {"lr": 0.002}}, "store-1")  # key order does not matter
    assert a != run_fingerprint({"train": {"lr": 0.001}, "seed": 0}, "store-1")
    assert a != run_fingerprint({"train": {"lr": 0.002}, "seed": 0}, "store-2")


def test_due_is_every_n_steps_and_the_last_step(tmp_path):
    run = TrainingRun("toy", loop=params_section("train", steps=45), fingerprint="f", out_dir=tmp_path / "ck",
                      live_dir=tmp_path / "live", metrics_path=tmp_path / "m.json")
    assert [s for s in range(1, 46) if run.due(s, 10)] == [10, 20, 30, 40, 45]


def test_truncating_the_plots_keeps_the_rows_up_to_the_checkpoint_with_dvclive_line_ends(tmp_path):
    tsv = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_bytes(b"step\tloss\r\n10\t0.5\r\n20\t0.25\n30\t0.125\n")  # CRLF rows of an older truncation
    (tsv.parent / "empty.tsv").write_bytes(b"")
    truncate_live(tmp_path, 20)
    assert tsv.read_bytes() == f"step\tloss{os.linesep}10\t0.5{os.linesep}20\t0.25{os.linesep}".encode()
    assert (tsv.parent / "empty.tsv").read_bytes() == b""


def test_a_run_sweeps_what_a_killed_run_left_beside_its_checkpoint_and_metrics_only(tmp_path):
    left = ["models/dynamics.tmp-4242-0badf00d/model.safetensors", "metrics/train.json.tmp-4242-0badf00d"]
    foreign = ["models/tokenizer.tmp-4242-0badf00d/model.safetensors", "metrics/tokenizer.json.tmp-4242-0badf00d"]
    for name in left + foreign:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("partial")
    TrainingRun("toy", loop=params_section("train", steps=4), fingerprint="f", out_dir=tmp_path / "models/dynamics",
                live_dir=tmp_path / "live", metrics_path=tmp_path / "metrics/train.json")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(foreign)


def test_a_seeded_generator_depends_on_its_keys_only():
    torch.rand(5)  # the global generator's state does not matter
    a = torch.rand(4, generator=seeded_generator(0, 7, 2))
    assert torch.equal(a, torch.rand(4, generator=seeded_generator(0, 7, 2)))
    assert not torch.equal(a, torch.rand(4, generator=seeded_generator(0, 8, 2)))
