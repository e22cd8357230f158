"""Crash-safe training and exact resume.

The centre piece kills real `python -m sinddm train` processes with SIGKILL three times
at seeded-random moments (once while checkpoint.pt is being written, its rename held back
by the wrapper tests/pause_before_rename.py), resumes each time with --resume and checks that
the result equals an uninterrupted run bit for bit: weights, checkpoint contents, loss
log and curve, checkpoint history. The other tests damage checkpoints by hand and check
the fallback, the history, and atomic writes.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sinddm.checkpoint import (HISTORY_RE, atomic_write, atomic_write_bytes, history_paths, load_model,
                               load_train_state, remove_stale_temporaries, state_checksum)
from sinddm.cli import main
from sinddm.errors import UserError

from .conftest import GOLDEN

SMALL = GOLDEN / "small_120x90.png"
PAUSE_BEFORE_RENAME = Path(__file__).parent / "pause_before_rename.py"  # `python -m sinddm`, a rename held back

# 2 scales (64x48, 81x61), width 8, batch 2. log_every and checkpoint_every are
# coprime, so most checkpoints hold an open loss-log window.
KILL_CONFIG = {
    "image": {"max_pixels": 5000}, "model": {"dim": 8},
    "train": {"steps": 48, "batch_size": 2, "lr": 1.0e-3, "lr_milestones": [24], "lr_gamma": 0.5,
              "ema_decay": 0.9, "ema_every": 2, "ema_start": 10, "checkpoint_every": 4, "log_every": 3,
              "grid_samples": 0, "keep_checkpoints": 2},
}


def cli(*args) -> int:
    return main([str(a) for a in args])


def write_config(path, **train):
    cfg = {k: dict(v) for k, v in KILL_CONFIG.items()}
    cfg["train"].update(train)
    path.write_text(yaml.safe_dump(cfg))
    return path


def files_under(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(root) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def assert_same_run(a, b, history=False):
    """Two run folders hold the same training result, bit for bit (and the same checkpoint
    history, when both runs saved at the same steps with the same config)."""
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys() and any(k.startswith("ema.") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"model.safetensors: {k} differs"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    sa, sb = load_train_state(a / "checkpoint.pt"), load_train_state(b / "checkpoint.pt")
    for part in ("model", "ema"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), f"checkpoint {part}.{k} differs"
    for name in ("step", "loss_history", "loss_window", "nonfinite", "lr_scheduler"):
        assert sa[name] == sb[name], name
    assert torch.equal(sa["rng"]["noise"], sb["rng"]["noise"]) and torch.equal(sa["rng"]["scale"], sb["rng"]["scale"])
    assert sa["checksum"] == sb["checksum"]  # a hash of everything: optimizer moments included
    for name in ("loss.csv", "loss.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    if history:
        ha = [(s, load_train_state(p)["checksum"]) for s, p in history_paths(a)]
        hb = [(s, load_train_state(p)["checksum"]) for s, p in history_paths(b)]
        assert ha == hb
    assert temporaries(a) == temporaries(b) == []


# ---------------------------------------------------------------------------------------
# SIGKILL at random moments
# ---------------------------------------------------------------------------------------

def _newest_history_step(run) -> int:
    folder = run / "checkpoints"
    steps = [int(m.group(1)) for m in (HISTORY_RE.fullmatch(n) for n in (os.listdir(folder) if folder.is_dir()
                                                                           else [])) if m]
    return max(steps, default=0)


def _wait_until(proc, cond, what, timeout=90.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"train ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _kill(proc, logs) -> None:
    assert proc.poll() is None, "the process had already ended: the kill would test nothing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    logs.append(proc.stderr.read())


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_three_times_then_resume_equals_an_uninterrupted_run(tmp_path):
    rng = random.Random(20240611)
    cfg = write_config(tmp_path / "tiny.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def train(run, *extra, pause=()):
        """`pause`: (file name, seconds) to hold back each rename onto that file."""
        sinddm = [str(PAUSE_BEFORE_RENAME), *pause] if pause else ["-m", "sinddm"]
        cmd = [sys.executable, *sinddm, "train", str(SMALL), "--out", str(run), "--device", "cpu", "--quiet", *extra]
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    straight, run = tmp_path / "straight", tmp_path / "killed"
    logs = []  # the killed processes' stderr, for failure messages
    reference = train(straight, "--config", cfg, "--seed", "5")  # runs alongside the killed ones

    def checkpoint_step() -> int:
        return int(load_train_state(run / "checkpoint.pt")["step"])

    def resume(pause=()):
        proc = train(run, "--resume", pause=pause)
        return proc, checkpoint_step()

    # 1: some way into the first run, a few milliseconds after a checkpoint.
    proc = train(run, "--config", cfg, "--seed", "5")
    target = rng.choice([8, 12])
    _wait_until(proc, lambda: _newest_history_step(run) >= target, f"checkpoint {target}")
    time.sleep(rng.uniform(0.0, 0.04))
    _kill(proc, logs)

    # 2: while checkpoint.pt is written: its temporary file is complete, the rename is held back.
    def checkpoint_temporaries() -> set:
        return {n for n in os.listdir(run) if n.startswith(".checkpoint.pt.") and n.endswith(".tmp")}
    left_by_kill_1 = checkpoint_temporaries()  # (when it hit the same moment): not this process's writes
    proc, start = resume(pause=("checkpoint.pt", "0.3"))
    nth, seen = rng.randint(1, 3), set()

    def nth_checkpoint_write() -> bool:
        seen.update(checkpoint_temporaries() - left_by_kill_1)
        return len(seen) >= nth
    _wait_until(proc, nth_checkpoint_write, f"checkpoint write {nth}")
    _kill(proc, logs)
    assert [t for t in temporaries(run) if t.startswith(".checkpoint.pt.")], "no torn write left behind"
    # Saves come every 4 steps: the nth one wrote its history file, but checkpoint.pt is the one before.
    assert start % 4 == 0 and checkpoint_step() == start + 4 * (nth - 1)
    assert _newest_history_step(run) == start + 4 * nth

    # 3: at a random moment after the resumed run saved once or twice (past the history file
    # the last kill left ahead of checkpoint.pt).
    proc, start = resume()
    target = _newest_history_step(run) + rng.choice([4, 8])
    _wait_until(proc, lambda: _newest_history_step(run) >= target, f"checkpoint {target}")
    time.sleep(rng.uniform(0.0, 0.1))
    _kill(proc, logs)

    # Finally run to the end.
    proc, start = resume()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "\n".join([*logs, err])
    assert f"steps {start} -> 48" in err  # resumed from checkpoint.pt itself (no fallback line)
    assert "resume:" not in err
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err

    assert load_train_state(run / "checkpoint.pt")["step"] == 48
    assert [s for s, _ in history_paths(run)] == [48, 44]
    assert_same_run(run, straight, history=True)
    rows = (run / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss" and [int(r.split(",")[0]) for r in rows[1:]] == list(range(3, 49, 3))


# ---------------------------------------------------------------------------------------
# SIGTERM / SIGINT: stop after the current step, saved, then resume exactly
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_current_step_and_resume_equals_an_uninterrupted_run(tmp_path, sig):
    cfg = write_config(tmp_path / "tiny.yaml", steps=100, checkpoint_every=10, log_every=7)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "sinddm", "train", str(SMALL), "--out", str(run), "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd + ["--config", str(cfg), "--seed", "3"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until(proc, lambda: _newest_history_step(run) >= 10, "checkpoint 10")
    assert proc.poll() is None, "the run ended before the signal: the test would test nothing"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    step = int(load_train_state(run / "checkpoint.pt")["step"])
    assert 10 <= step < 100
    assert f"stopped by {signal.Signals(sig).name} at step {step}: saved {run}" in err
    assert f"continue it with 'sinddm train {SMALL} --out {run} --resume'" in err
    assert "Traceback" not in err and temporaries(run) == []
    assert load_model(run / "model.safetensors").step == step  # the model is that step's too
    assert not (run / "samples_grid.png").exists()  # the end-of-run grid is not drawn for a stopped run

    assert cli("train", SMALL, "--out", run, "--resume", "--device", "cpu", "--quiet") == 0
    straight = tmp_path / "straight"
    assert cli("train", SMALL, "--config", cfg, "--out", straight, "--seed", 3, "--device", "cpu", "--quiet") == 0
    assert_same_run(run, straight)


def test_stop_requests_first_signal_asks_second_interrupts(monkeypatch):
    from sinddm.training import _StopRequests

    before = signal.getsignal(signal.SIGTERM)
    with _StopRequests() as stop:
        assert stop.signum is None
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert signal.getsignal(signal.SIGTERM) is before  # the second signal already gave the handlers back
    assert signal.getsignal(signal.SIGTERM) is before and signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------------------------
# loss log across a stop off the log grid
# ---------------------------------------------------------------------------------------

def test_stop_off_the_log_grid_then_resume_logs_like_one_run(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", steps=11)
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--device", "cpu", "--quiet", "--seed", 2]
    assert cli("train", SMALL, "--config", cfg, "--out", a, "--steps", 7, *common) == 0
    rows = (a / "loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "6", "7"]  # 7: provisional, its window stays open
    state = load_train_state(a / "checkpoint.pt")
    assert state["loss_window"]["steps"] == 1 and state["loss_window"]["provisional_row"] is True
    assert cli("train", SMALL, "--out", a, "--steps", 8, "--resume", *common) == 0  # 8: still off the grid
    assert cli("train", SMALL, "--out", a, "--steps", 11, "--resume", *common) == 0
    assert cli("train", SMALL, "--config", cfg, "--out", b, *common) == 0
    assert_same_run(a, b)
    assert [r.split(",")[0] for r in (a / "loss.csv").read_text().splitlines()[1:]] == ["3", "6", "9", "11"]


def test_resume_at_the_final_step_changes_nothing(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", steps=7)
    a = tmp_path / "a"
    assert cli("train", SMALL, "--config", cfg, "--out", a, "--device", "cpu", "--quiet") == 0
    before = files_under(a)
    capsys.readouterr()
    assert cli("train", SMALL, "--out", a, "--resume", "--device", "cpu", "--quiet") == 0
    assert capsys.readouterr().err == f"{a}: already at step 7 of 7; nothing to train (pass --steps N to train longer)\n"
    after = files_under(a)
    assert after.keys() == before.keys()
    for name in ("model.safetensors", "loss.csv", "loss.png", "config.yaml"):
        assert after[name] == before[name], name
    assert load_train_state(a / "checkpoint.pt")["checksum"] == load_train_state(a / "checkpoints" /
                                                                                 "step_0000007.pt")["checksum"]


# ---------------------------------------------------------------------------------------
# damaged checkpoints: detection and fallback
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run stopped at step 12 (checkpoints at 4, 8, 12; history keeps 8 and 12) and the
    same run trained straight to 16."""
    root = tmp_path_factory.mktemp("runs")
    cfg = write_config(root / "c.yaml", steps=16)
    common = ["--config", cfg, "--device", "cpu", "--quiet", "--seed", 9]
    assert cli("train", SMALL, "--out", root / "at12", "--steps", 12, *common) == 0
    assert cli("train", SMALL, "--out", root / "straight", *common) == 0
    return root


def _copy(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "at12", run)
    return run


def _flip_byte(path, where=0.5):
    """Change one byte inside the tensor data of a torch.save file (a zip of stored records):
    the kind of damage torch.load does not notice (it skips the zip's CRCs)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        records = sorted((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        info = records[int(len(records) * where)]
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _resume(run, capsys, steps=16):
    capsys.readouterr()
    rc = cli("train", SMALL, "--out", run, "--resume", "--steps", steps, "--device", "cpu", "--quiet")
    return rc, capsys.readouterr().err


def test_history_holds_independent_copies(runs):
    run = runs / "at12"
    assert [(s, p.name) for s, p in history_paths(run)] == [(12, "step_0000012.pt"), (8, "step_0000008.pt")]
    newest = run / "checkpoints" / "step_0000012.pt"
    assert newest.read_bytes() == (run / "checkpoint.pt").read_bytes()
    assert os.stat(newest).st_ino != os.stat(run / "checkpoint.pt").st_ino  # not a hard link
    assert load_train_state(run / "checkpoints" / "step_0000008.pt")["step"] == 8


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_damaged_checkpoint_pt_falls_back_to_the_history(damage, runs, tmp_path, capsys):
    run = _copy(runs, tmp_path)
    ckpt = run / "checkpoint.pt"
    {"truncated": _truncate, "flipped": _flip_byte, "missing": os.unlink}[damage](ckpt)
    if damage != "missing":
        with pytest.raises(UserError, match="checkpoint.pt"):
            load_train_state(ckpt)
    rc, err = _resume(run, capsys)
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("resume:")]
    assert len(notes) == 1, err
    why = {"truncated": "truncated or corrupt", "flipped": "checksum mismatch", "missing": "no such file"}[damage]
    assert notes[0].startswith("resume: checkpoint.pt: ") and why in notes[0]
    assert "resuming from checkpoints/step_0000012.pt (step 12) instead" in notes[0]
    assert "steps 12 -> 16" in err
    assert_same_run(run, runs / "straight")


def test_two_damaged_files_fall_back_two_checkpoints(runs, tmp_path, capsys):
    run = _copy(runs, tmp_path)
    _flip_byte(run / "checkpoint.pt", 0.3)
    _truncate(run / "checkpoints" / "step_0000012.pt")
    rc, err = _resume(run, capsys)
    assert rc == 0, err
    note = [line for line in err.splitlines() if line.startswith("resume:")]
    assert len(note) == 1 and "checkpoint.pt: checksum mismatch" in note[0] and "(and 1 more)" in note[0]
    assert "resuming from checkpoints/step_0000008.pt (step 8) instead" in note[0]
    assert "steps 8 -> 16" in err
    assert_same_run(run, runs / "straight")  # exact from an older checkpoint too


def test_no_intact_checkpoint_is_one_error_line_and_changes_nothing(runs, tmp_path, capsys):
    run = _copy(runs, tmp_path)
    _truncate(run / "checkpoint.pt")
    for _, p in history_paths(run):
        _flip_byte(p)
    before = files_under(run)
    rc, err = _resume(run, capsys)
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --resume: no intact training checkpoint"), err
    for name in ("checkpoint.pt", "step_0000012.pt", "step_0000008.pt", "--overwrite"):
        assert name in lines[0]
    assert files_under(run) == before


def test_a_checkpoint_of_another_format_version_is_not_skipped(runs, tmp_path, capsys):
    """Not damage: falling back to an older sinddm/1 file would silently drop the newer run's work."""
    run = _copy(runs, tmp_path)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["format"] = "sinddm/2"
    torch.save(state, run / "checkpoint.pt")
    before = files_under(run)
    rc, err = _resume(run, capsys)
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 1 and "'sinddm/2' is not supported" in lines[0] and "checkpoint.pt" in lines[0], err
    assert files_under(run) == before


def test_resume_removes_torn_writes_and_keeps_other_files(runs, tmp_path, capsys):
    run = _copy(runs, tmp_path)
    torn = [run / ".checkpoint.pt.ab12cd34.tmp", run / "checkpoints" / ".step_0000016.pt.zz_y9x8w.tmp",
            run / ".model.safetensors.q1w2e3r4.tmp", run / ".loss.png.k9j8h7g6.tmp"]
    for p in torn:
        p.write_bytes(b"half a file")
    mine = [run / ".notes.ab12cd34.tmp", run / "notes.txt"]
    for p in mine:
        p.write_text("keep me")
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path / "nowhere")) == []
    rc, err = _resume(run, capsys)
    assert rc == 0, err
    assert not any(p.exists() for p in torn)
    assert all(p.read_text() == "keep me" for p in mine)


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_keep_checkpoints(keep, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", steps=14, keep_checkpoints=keep)
    run = tmp_path / "run"
    assert cli("train", SMALL, "--config", cfg, "--out", run, "--device", "cpu", "--quiet") == 0
    steps = [s for s, _ in history_paths(run)]
    assert steps == [14, 12, 8, 4][:keep]
    assert (run / "checkpoints").exists() == (keep > 0)
    assert load_train_state(run / "checkpoint.pt")["step"] == 14


# ---------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------

def test_atomic_write_flushes_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("dir" if _is_dir(fd) else "file")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert synced == ["file", "dir"]
    assert (tmp_path / "a.bin").read_bytes() == b"data"


def _is_dir(fd) -> bool:
    import stat
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_atomic_write_gives_new_files_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_bytes(tmp_path / "new.csv", b"x")
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_checksum_catches_what_torch_load_does_not(runs, tmp_path):
    """torch.load skips its zip CRCs: a changed tensor byte loads silently; the checksum does not."""
    path = tmp_path / "c.pt"
    shutil.copy(runs / "at12" / "checkpoint.pt", path)
    state = torch.load(path, weights_only=True)
    assert state["checksum"] == state_checksum(state)
    state["model"]["out.bias"][0] += 1e-6
    assert state["checksum"] != state_checksum(state)
