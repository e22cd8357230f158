"""Writing a training run's folder at each checkpoint (reading it back: `sinddm.checkpoint`).

At every checkpoint, in this order: `checkpoints/step_XXXXXXX.pt` (when train.keep_checkpoints
> 0) and `checkpoint.pt` (the training state, for --resume), the history pruned, then
`model.safetensors` (the EMA weights, for inference), then the run's other files (the loss
log and its picture). Every file is written atomically (`checkpoint.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol

from .checkpoint import (CHECKPOINT_DIR, MODEL_FILE, TRAIN_STATE_FILE, atomic_write_bytes, ema_weights, history_path,
                         history_paths, remove_stale_temporaries, save_model, train_state_bytes)
from .config import Config
from .pyramid import Pyramid


def save_train_state(run_dir: Path, state: dict[str, Any], keep: int) -> None:
    """Write `checkpoints/step_XXXXXXX.pt` (when keep > 0), then `checkpoint.pt`, then prune the
    history to the newest `keep` files. Two independent copies (not hard links), so damage to
    one leaves the other; history files newer than `state` (left by an abandoned, resumed-over
    attempt) are removed too."""
    run_dir = Path(run_dir)
    data = train_state_bytes(state)
    step = int(state["step"])
    if keep > 0:
        (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(history_path(run_dir, step), data)
    atomic_write_bytes(run_dir / TRAIN_STATE_FILE, data)
    kept = 0
    for s, p in history_paths(run_dir):
        if s > step or kept >= keep:
            p.unlink()
        else:
            kept += 1


class RunFile(Protocol):
    """Something that writes its own file(s) into a run folder at each checkpoint (`LossLog`)."""

    def write(self, run_dir: Path) -> None: ...


class CheckpointWriter:
    """Writes a run folder's checkpoints; its state is the step it last saved (`saved_step`:
    None before the first save, the checkpoint's step after a resume), which is what a
    run that has to stop still has on disk."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.saved_step: int | None = None

    def prepare(self) -> None:
        """Before training: make the folder; remove the temporary files an interrupted save left."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir)

    def write(self, state: dict[str, Any], keep: int, pyramid: Pyramid, config: Config, source: str,
              run_files: Iterable[RunFile] = ()) -> None:
        """The training checkpoint `state` (keeping `keep` in the history), the inference model
        made from its EMA weights, then each of `run_files`."""
        step = int(state["step"])
        save_train_state(self.out_dir, state, keep)
        save_model(self.out_dir / MODEL_FILE, ema_weights(state["ema"]), pyramid, config, step, source)
        for f in run_files:
            f.write(self.out_dir)
        self.saved_step = step

    def resumed_at(self, step: int) -> None:
        """The run was resumed from the checkpoint of `step`: that is what is saved."""
        self.saved_step = step
