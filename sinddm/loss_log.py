"""The training loss log: loss.csv (one row per train.log_every steps, the mean loss over the
applied steps since the row before) and its picture, loss.png.

The open window (the steps since the last row) is summed on the device, so adding a step
never syncs with a GPU; it is read back only when a row is written. A run that ends off the
log grid writes a provisional row and keeps its window open; the next run (a resume) drops
that row and goes on summing, so a stopped and resumed run logs exactly like one run. The
window and the rows are the log's state (`state_dict`: the checkpoint's "loss_history" and
"loss_window" entries).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .checkpoint import atomic_write_bytes

CSV_FILE = "loss.csv"
PICTURE_FILE = "loss.png"


class LossLog:
    """Rows of (step, mean loss) and the open window of steps since the last row."""

    def __init__(self, device: torch.device):
        zeros = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self.rows: list[tuple[int, float]] = []
        self.win_sum = zeros(torch.float32)  # sum of the applied steps' losses
        self.win_ok = zeros(torch.long)      # applied steps
        self.win_steps = 0                   # all steps
        self.provisional = False             # rows[-1] is an off-grid end-of-run row

    def add(self, loss: torch.Tensor, ok: torch.Tensor) -> None:
        """One step's loss into the window (counted when `ok`, the step was applied); no sync."""
        self.win_sum += torch.where(ok, loss, 0.0)
        self.win_ok += ok
        self.win_steps += 1

    def counters(self) -> list[torch.Tensor]:
        """(window loss sum, applied steps in the window) as float device scalars, to read back
        together with other counters (`numeric_guard.read_scalars`) and pass to `row`."""
        return [self.win_sum, self.win_ok.float()]

    def row(self, step: int, read: list[float], close_window: bool = True) -> float:
        """Append the row for `step` from `read` (`counters()` read back) and return its mean loss
        (NaN when no step in the window was applied). `close_window=False` writes a provisional
        row (a run ending off the log grid): the window stays open, the next run replaces it."""
        total, n_ok = read[0], int(read[1])
        mean = total / n_ok if n_ok else float("nan")  # mean over the applied steps
        self.rows.append((step, mean))
        if close_window:
            self.win_sum.zero_()
            self.win_ok.zero_()
            self.win_steps = 0
        else:
            self.provisional = True
        return mean

    def reopen(self) -> None:
        """Before training on: drop a provisional last row (its window is still open)."""
        if self.provisional:
            self.rows.pop()
            self.provisional = False

    def write(self, run_dir: Path) -> None:
        """loss.csv and (when there is a row) loss.png in `run_dir`, each written atomically."""
        from .plots import loss_curve

        run_dir = Path(run_dir)
        lines = ["step,loss"] + [f"{s},{v:.6f}" for s, v in self.rows]
        atomic_write_bytes(run_dir / CSV_FILE, ("\n".join(lines) + "\n").encode())
        if self.rows:
            steps, losses = zip(*self.rows)
            buf = io.BytesIO()
            loss_curve(list(steps), list(losses)).save(buf, format="PNG")
            atomic_write_bytes(run_dir / PICTURE_FILE, buf.getvalue())

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The checkpoint's "loss_history" and "loss_window" entries, in that order."""
        return {"loss_history": [list(p) for p in self.rows],
                "loss_window": {"sum": float(self.win_sum), "applied": int(self.win_ok), "steps": self.win_steps,
                                "provisional_row": self.provisional}}

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint (its other entries are ignored); one without "loss_window"
        (earlier versions) leaves the window empty."""
        self.rows = [(int(s), float(v)) for s, v in state["loss_history"]]
        window = state.get("loss_window")
        if window:
            self.win_sum.fill_(float(window["sum"]))
            self.win_ok.fill_(int(window["applied"]))
            self.win_steps = int(window["steps"])
            self.provisional = bool(window["provisional_row"])
