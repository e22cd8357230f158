"""The EMA's horizon against the run's length: `ema_copy` (below) / `config.ema_warning`, checked
against what the trainer really averages, and the warning `sinddm train` prints."""

import pytest
import torch
import yaml
from PIL import Image

from sinddm.cli import main
from sinddm.config import TrainConfig, config_from_dict, ema_warning, load_config
from sinddm.pyramid import build_pyramid
from sinddm.training import Trainer

from .conftest import ASSETS, CONFIGS, GOLDEN

TINY_TRAIN = dict(steps=12, batch_size=1, lr=1e-2, lr_milestones=[100], ema_decay=0.8, ema_every=2, ema_start=3,
                  checkpoint_every=1000, log_every=4, grid_samples=0)


def ema_copy(t: TrainConfig, steps: int | None = None) -> tuple[int, float]:
    """(step, share): the step of the EMA's last plain copy of the live weights (the last EMA
    step at or before ema_start) and the share of the final EMA those weights still make up,
    ema_decay ** (averaging updates since)."""
    steps = t.steps if steps is None else steps
    copied = min(steps, t.ema_start) // t.ema_every * t.ema_every
    return copied, t.ema_decay ** (steps // t.ema_every - copied // t.ema_every)


def tiny(**train):
    return config_from_dict({"image": {"max_pixels": 6000}, "model": {"dim": 4}, "train": {**TINY_TRAIN, **train}})


def test_ema_copy_is_the_trainers_weight_on_the_copied_weights(tmp_path):
    """Rebuild the EMA from snapshots of the live weights at every EMA step: the copy made at
    step 2 (the last EMA step <= ema_start) enters with the share `ema_copy` reports."""
    cfg = tiny()
    pyramid = build_pyramid(Image.open(ASSETS / "rocket.jpg").convert("RGB"), 6000)
    tr = Trainer(cfg, pyramid, tmp_path / "run", torch.device("cpu"), seed=0)
    snaps = {}
    for _ in range(cfg.train.steps):
        tr.train_step()
        if tr.step % cfg.train.ema_every == 0:
            snaps[tr.step] = [p.detach().clone() for p in tr.model.parameters()]
    copied, share = ema_copy(cfg.train)
    assert copied == 2 and share == pytest.approx(0.8 ** 5)
    d = cfg.train.ema_decay
    expected = [share * w for w in snaps[copied]]
    for step in range(copied + 2, cfg.train.steps + 1, 2):
        weight = (1 - d) * d ** ((cfg.train.steps - step) // 2)
        expected = [e + weight * w for e, w in zip(expected, snaps[step])]
    for e, p in zip(expected, tr.ema.module.parameters()):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-6)


def test_ema_warning_when_early_weights_stay_in():
    t = load_config(CONFIGS / "small.yaml").train        # 0.995 every 10 steps from step 800
    msg = ema_warning(t, 2000)
    assert msg and "55%" in msg and "step 800" in msg and "ema_decay to 0.944" in msg
    assert ema_warning(t) is None                         # its own 16k steps: 0.05 %
    assert ema_warning(t, 801) is None                    # no update since the copy: it is recent
    assert ema_warning(t, 1500) is None                   # copied in the second half of the run
    fixed = config_from_dict({"train": {**TINY_TRAIN, "steps": 2000, "ema_decay": 0.944, "ema_every": 10,
                                        "ema_start": 800}}).train
    assert ema_warning(fixed) is None                     # the suggested decay fixes it
    assert ema_copy(fixed)[1] < 0.001
    never = ema_warning(t, 4)                             # no EMA step at all: the initial weights
    assert never and "ema_every 10" in never and "initial weights" in never


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_recipes_keep_no_early_weights(config):
    assert ema_warning(load_config(CONFIGS / config).train) is None


def test_train_prints_one_warning_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"image": {"max_pixels": 6000}, "model": {"dim": 4},
                                   "train": {**TINY_TRAIN, "steps": 6, "ema_decay": 0.95, "ema_every": 1,
                                             "ema_start": 1}}))
    rc = main(["train", str(GOLDEN / "small_120x90.png"), "--config", str(cfg), "--out", str(tmp_path / "run"),
               "--device", "cpu", "--quiet"])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "train.ema_decay 0.95" in lines[0] and "step 1" in lines[0]
    assert (tmp_path / "run" / "model.safetensors").is_file()  # a warning, not an error
