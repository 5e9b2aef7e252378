import pytest
import torch
from torch import nn

from pipeline.networks.checkpoint import (
    CheckpointError,
    checkpoint_hash,
    load_model,
    load_training_state,
    read_config,
    save_checkpoint,
)
from pipeline.training.optim import EMA, build_optimizer, warmup_cosine


def build(config: dict) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(config["width"], config["width"]), nn.LayerNorm(config["width"]))


def _train_steps(model, opt, sched, ema, n):
    for _ in range(n):
        loss = model(torch.randn(4, model[0].in_features)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
    return loss.item()


def test_resume_restores_weights_optimizer_schedule_and_rng(tmp_path):
    model = build({"width": 8})
    ema = EMA(model, 0.9)
    opt = build_optimizer(model, 1e-2, 0.01)
    sched = warmup_cosine(opt, 2, 10)
    _train_steps(model, opt, sched, ema, 3)
    save_checkpoint(tmp_path / "ck", kind="toy", config={"width": 8}, model=model, ema=ema,
                    optimizer=opt, scheduler=sched, step=3, extra={"params_hash": "abc"})
    reference = _train_steps(model, opt, sched, ema, 2)  # continue without interruption

    model2 = build({"width": 8})
    ema2 = EMA(model2, 0.9)
    opt2 = build_optimizer(model2, 1e-2, 0.01)
    sched2 = warmup_cosine(opt2, 2, 10)
    step, extra = load_training_state(tmp_path / "ck", kind="toy", model=model2, ema=ema2,
                                      optimizer=opt2, scheduler=sched2)
    assert step == 3 and extra == {"params_hash": "abc"}
    assert _train_steps(model2, opt2, sched2, ema2, 2) == pytest.approx(reference, abs=0)


def test_load_model_uses_ema_weights_strictly(tmp_path):
    model = build({"width": 8})
    ema = EMA(model, 0.0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)  # decay 0: the EMA equals the model now
    save_checkpoint(tmp_path / "ck", kind="toy", config={"width": 8}, model=build({"width": 8}), ema=ema)
    loaded, header = load_model(tmp_path / "ck", "toy", build)
    assert header["config"] == {"width": 8}
    assert torch.equal(loaded[0].weight, model[0].weight)


def test_mismatched_config_fails_naming_the_drift(tmp_path):
    save_checkpoint(tmp_path / "ck", kind="toy", config={"width": 8}, model=build({"width": 8}))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*0\.weight: file \(8, 8\) vs model \(6, 6\)"):
        load_model(tmp_path / "ck", "toy", lambda c: build({"width": 6}))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_model(tmp_path / "ck", "toy", lambda c: nn.Sequential(nn.Linear(8, 8)))


def test_wrong_kind_or_missing_checkpoint_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "ck", kind="toy", config={"width": 8}, model=build({"width": 8}))
    with pytest.raises(CheckpointError, match="holds a 'toy' checkpoint, expected 'dynamics'"):
        read_config(tmp_path / "ck", "dynamics")
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        read_config(tmp_path / "nothing", "toy")


def full_checkpoint(directory):
    model = build({"width": 8})
    ema, opt = EMA(model, 0.9), build_optimizer(model, 1e-2, 0.01)
    sched = warmup_cosine(opt, 2, 10)
    _train_steps(model, opt, sched, ema, 2)
    save_checkpoint(directory, kind="toy", config={"width": 8}, model=model, ema=ema, optimizer=opt, scheduler=sched, step=2)


def damage(file, how: str) -> None:
    data = file.read_bytes()
    file.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00\xff" * 64}[how])


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "ema.safetensors", "train_state.safetensors",
                                  "train_state.json"])
@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_a_damaged_checkpoint_file_is_named_with_what_to_do_and_nothing_is_loaded(tmp_path, name, how):
    full_checkpoint(tmp_path / "ck")
    damage(tmp_path / "ck" / name, how)
    model = build({"width": 8})
    ema, opt = EMA(model, 0.9), build_optimizer(model, 1e-2, 0.01)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_training_state(tmp_path / "ck", kind="toy", model=model, ema=ema, optimizer=opt)
    assert str(info.value).startswith(f"{tmp_path / 'ck' / name}: damaged or truncated checkpoint file (")
    assert str(info.value).endswith(f"delete {tmp_path / 'ck'} and rerun `dvc repro` (the stage that writes it trains it again)")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not opt.state_dict()["state"]
    if name in ("config.json", "ema.safetensors"):  # what inference reads
        with pytest.raises(CheckpointError, match=f"^{tmp_path / 'ck' / name}: damaged or truncated"):
            load_model(tmp_path / "ck", "toy", build)


def test_a_missing_checkpoint_file_is_named(tmp_path):
    full_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "train_state.json").unlink()
    model = build({"width": 8})
    with pytest.raises(CheckpointError, match=r"train_state.json: missing from the checkpoint; delete .* rerun `dvc repro`"):
        load_training_state(tmp_path / "ck", kind="toy", model=model, ema=None, optimizer=build_optimizer(model, 1e-2, 0.01))


def test_checkpoint_hash_changes_with_weights(tmp_path):
    save_checkpoint(tmp_path / "a", kind="toy", config={"width": 8}, model=build({"width": 8}))
    save_checkpoint(tmp_path / "b", kind="toy", config={"width": 8}, model=build({"width": 8}))
    m = build({"width": 8})
    with torch.no_grad():
        m[0].bias.add_(1e-3)
    save_checkpoint(tmp_path / "c", kind="toy", config={"width": 8}, model=m)
    assert checkpoint_hash(tmp_path / "a") == checkpoint_hash(tmp_path / "b") != checkpoint_hash(tmp_path / "c")
