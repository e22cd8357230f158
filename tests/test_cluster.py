"""eval-suite's executors (sinddm.eval.cluster): submitit's local executor runs real jobs on the
CPU; the SLURM path is checked through the executor's parameters and sbatch file (no cluster).

The local-executor tests need submitit (`pip install sinddm[cluster]`, also in the test extra)
and are skipped with that reason without it."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sinddm.cli import main
from sinddm.errors import UserError
from sinddm.eval import cluster
from sinddm.eval.cluster import ExecutorOptions, executor_options, gpu_slots, slurm_minutes

from .conftest import CONFIGS, GOLDEN

try:
    import submitit  # noqa: F401
    HAVE_SUBMITIT = True
except ImportError:
    HAVE_SUBMITIT = False
needs_submitit = pytest.mark.skipif(not HAVE_SUBMITIT, reason="submitit is not installed (pip install sinddm[cluster])")


def cli(*args) -> int:
    return main([str(a) for a in args])


def _pictures(folder: Path, n: int) -> Path:
    """n 64x48 crops (one-scale pyramids: a smoke run trains and samples in seconds)."""
    folder.mkdir()
    with Image.open(GOLDEN / "land_248x186.png") as im:
        land = np.asarray(im.convert("RGB"))
    for k in range(n):
        Image.fromarray(land[50 + 40 * k:98 + 40 * k, 60:124]).save(folder / f"{'ab'[k]}.png")
    return folder


def _recipe(path: Path, **train) -> Path:
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    cfg["train"].update(train)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _numbers(doc: dict) -> dict:
    """results.json without its timing column."""
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_s"} for r in rows]  # noqa: E731
    return {"rows": strip(doc["rows"]), "means": strip(doc["means"]), "paired": doc.get("paired")}


@needs_submitit
def test_local_executor_gives_the_inline_tables_and_a_rerun_skips_finished_jobs(tmp_path, capsys):
    images = _pictures(tmp_path / "images", 2)
    recipes = [CONFIGS / "smoke.yaml", _recipe(tmp_path / "hot.yaml", lr=1e-2)]
    common = ["--config", *recipes, "--num", 2, "--steps", 2, "--device", "cpu", "--threads", 1, "--quiet"]
    assert cli("eval-suite", images, *common, "--out", tmp_path / "inline") == 0
    local = tmp_path / "local"
    assert cli("eval-suite", images, *common, "--out", local, "--executor", "local", "--jobs", 2) == 0
    capsys.readouterr()
    inline_doc = json.loads((tmp_path / "inline" / "results.json").read_text())
    local_doc = json.loads((local / "results.json").read_text())
    assert len(local_doc["rows"]) == 4 and all(r["swd"] > 0 and r["status"] == "ok" for r in local_doc["rows"])
    assert _numbers(local_doc) == _numbers(inline_doc)  # same seeds, same numbers
    assert local_doc["paired"]["rows"][0]["swd"]["se"] > 0

    # Two jobs at once: the second started before the first finished; each job logged into its own file,
    # in a process of its own with the CPU threads asked for and no GPU.
    suite_log = (local / "logs" / "suite.log").read_text().splitlines()
    started = [i for i, ln in enumerate(suite_log) if ": started (local job" in ln]
    finished = [i for i, ln in enumerate(suite_log) if ln.endswith(": done")]
    assert len(started) == len(finished) == 4 and started[1] < finished[0]
    logs = {p: p.read_text() for p in sorted((local / "logs").glob("*/*.log"))}
    assert [p.relative_to(local / "logs").as_posix() for p in logs] == ["hot/a.log", "hot/b.log", "smoke/a.log",
                                                                         "smoke/b.log"]
    for text in logs.values():
        assert "1 CPU threads, CUDA_VISIBLE_DEVICES=''" in text and "training 2 steps" in text
        assert text.rstrip().endswith(": done")
    assert len({ln.split("pid ")[1].split(",")[0] for t in logs.values() for ln in t.splitlines() if "pid " in ln}) == 4

    # The same command again: every job is finished, none runs, no job log grows, the tables stay.
    assert cli("eval-suite", images, *common, "--out", local, "--executor", "local", "--jobs", 2) == 0
    err = capsys.readouterr().err
    assert err.count("finished, skipped") == 4 and "started" not in err
    assert {p: p.read_text() for p in logs} == logs
    assert _numbers(json.loads((local / "results.json").read_text())) == _numbers(inline_doc)


@needs_submitit
def test_a_failed_job_is_named_and_the_others_keep_their_results(tmp_path, capsys):
    images = _pictures(tmp_path / "images", 1)
    # A recipe that really fails at run time: the loss is infinite at once and one such step stops training.
    boom = _recipe(tmp_path / "boom.yaml", lr=1e30, max_nonfinite_steps=1)
    out = tmp_path / "suite"
    args = ["eval-suite", images, "--config", CONFIGS / "smoke.yaml", boom, "--num", 2, "--steps", 3, "--device",
            "cpu", "--threads", 1, "--quiet", "--out", out, "--executor", "local", "--jobs", 2]
    assert cli(*args) == 1
    err = capsys.readouterr().err
    failed = [ln for ln in err.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and failed[0].startswith("[2/2] boom / a.png: FAILED: error: NonFiniteLoss")
    assert failed[0].endswith(f"(log {(out / 'logs' / 'boom' / 'a.log').resolve()})")
    assert err.strip().splitlines()[-1].startswith("1 of 2 jobs left no results: boom / a.png")
    doc = json.loads((out / "results.json").read_text())
    ok, bad = doc["rows"]
    assert ok["recipe"] == "smoke" and ok["status"] == "ok" and ok["steps"] == 3 and ok["swd"] > 0
    assert bad["recipe"] == "boom" and bad["swd"] is None and bad["status"].startswith("missing: error: NonFiniteLoss")
    assert doc["missing"] == [{"recipe": "boom", "image": "a.png", "why": bad["status"][len("missing: "):]}]
    assert (out / "smoke" / "a" / "eval" / "metrics.json").is_file()
    md = (out / "results.md").read_text()
    assert "| boom | a.png | missing |" in md and "Missing (no results" in md
    assert "boom,a.png,,,,,,,,,,,,missing: error: NonFiniteLoss" in (out / "results.csv").read_text()


@needs_submitit
def test_a_killed_job_is_reported_with_its_logs_last_line(tmp_path):
    def job(spec):  # defined here, so that submitit pickles it by value
        import os
        import signal

        with open(spec["log"], "a") as f:
            print(f"{spec['tag']}: working", file=f)
        if spec["tag"] == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        return spec["tag"]

    specs = [{"tag": t, "log": str(tmp_path / f"{t}.log"), "threads": 1} for t in ("killed", "fine")]
    lines = []
    got = cluster.run_jobs(job, specs, ExecutorOptions("local", jobs=2), tmp_path / "submitit", "cpu", lines.append)
    why = "ended without an error line (killed?); last line: killed: working"
    assert got == {0: (False, why), 1: (True, "fine")}
    assert f"killed: FAILED: {why} (log {specs[0]['log']})" in lines


def test_gpus_are_shared_out_one_set_per_parallel_job():
    four = ["0", "1", "2", "3"]
    assert gpu_slots(ExecutorOptions("local", jobs=2), "auto", four) == [(0,), (1,)]
    assert gpu_slots(ExecutorOptions("local", jobs=2, gpus_per_job=2), "cuda", four) == [(0, 1), (2, 3)]
    assert gpu_slots(ExecutorOptions("local", jobs=2), "cuda", ["4", "6"]) == [(4,), (6,)]  # as CUDA_VISIBLE_DEVICES
    assert gpu_slots(ExecutorOptions("local", jobs=3), "cpu", four) == [(), (), ()]
    assert gpu_slots(ExecutorOptions("local", jobs=2), "auto", []) == [(), ()]
    for opts, device, words in [(ExecutorOptions("local", jobs=3, gpus_per_job=2), "cuda", "needs 6 GPUs, 4 visible"),
                                (ExecutorOptions("local", jobs=5), "auto", "never share"),
                                (ExecutorOptions("local", jobs=1), "cuda:1", "--device cuda"),
                                (ExecutorOptions("local", jobs=1, gpus_per_job=1), "cpu", "--gpus-per-job 0")]:
        with pytest.raises(UserError, match=words):
            gpu_slots(opts, device, four)


@needs_submitit
def test_the_local_executor_runs_this_python_with_the_slot_gpus_and_threads(tmp_path):
    ex = cluster.make_executor(ExecutorOptions("local", jobs=2), tmp_path, gpus=(1,), threads=3)
    assert ex.python == shlex.quote(sys.executable)
    assert ex.parameters["visible_gpus"] == (1,) and ex.parameters["gpus_per_node"] == 1
    assert ex.parameters["setup"] == ["export OMP_NUM_THREADS=3"]
    assert ex.parameters["timeout_min"] >= 60 * 24  # not submitit's 2-minute default


@needs_submitit
def test_slurm_executor_parameters(tmp_path, monkeypatch):
    # submitit's SLURM executor wants srun on PATH; a stub stands in for the cluster.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    opts = executor_options(executor="slurm", jobs=8, slurm_partition="gpu", slurm_time="1:30:00",
                            slurm_extra=["account=mylab", "qos=high"])
    ex = cluster.make_executor(opts, tmp_path / "sub", gpus_per_job=2)
    p = ex.parameters
    assert (p["partition"], p["time"], p["gpus_per_node"], p["array_parallelism"]) == ("gpu", 90, 2, 8)
    assert p["additional_parameters"] == {"account": "mylab", "qos": "high"} and p["ntasks_per_node"] == 1
    assert ex.python == shlex.quote(sys.executable)
    sbatch = ex._make_submission_file_text("CMD", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --account=mylab", "#SBATCH --qos=high"):
        assert line in sbatch
    ex.parameters["map_count"] = 20  # what submitit sets when it submits 20 jobs as one array
    assert "#SBATCH --array=0-19%8" in ex._make_submission_file_text("CMD", "uid")  # --jobs 8 at once
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserError, match="srun"):
        cluster.make_executor(opts, tmp_path / "sub")


def test_slurm_time_forms():
    assert [slurm_minutes(t) for t in ("90", "1:30:00", "2-00:00:00", "1-12", "10:30", "0:0:1")] == [
        90, 90, 2880, 2160, 11, 1]
    for bad in ("", "1h", "0", "1:2:3:4"):
        with pytest.raises(UserError, match="--slurm-time"):
            slurm_minutes(bad)


def test_suite_config_file_and_options(tmp_path):
    f = tmp_path / "suite.yaml"
    f.write_text("executor: slurm\njobs: 4\nslurm_time: 120\nslurm_partition: a100\nslurm_extra: {account: lab}\n")
    opts = executor_options(f, jobs=2, slurm_extra=None)  # the command line wins; None = not given
    assert opts == ExecutorOptions("slurm", 2, None, "a100", "120", {"account": "lab"})
    for text, words in [("jobs: 0\n", "at least 1"), ("gpus: 1\n", "unknown key 'gpus'"),
                        ("jobs: two\n", "wrong type"), ("- 1\n", "expected keys"),
                        ("executor: slurm\n", "--slurm-time"), ("executor: mars\n", "--executor mars")]:
        f.write_text(text)
        with pytest.raises(UserError, match=words):
            executor_options(f)


@pytest.mark.parametrize("argv, words, submitit_first", [
    (["--executor", "slurm"], "--slurm-time", False),
    (["--suite-config", "{tmp}/missing.yaml"], "no such file", False),
    (["--executor", "slurm", "--slurm-time", "60", "--slurm-extra", "account"], "KEY=VALUE", False),
    (["--executor", "local", "--jobs", "2", "--gpus-per-job", "1"], "--gpus-per-job 0", True),
    (["--executor", "slurm", "--slurm-time", "60", "--device", "tpu"], "unknown device", True),
    (["--config", "{tmp}/logs.yaml"], "may not be named 'logs'", False),
])
def test_eval_suite_executor_bad_input(tmp_path, capsys, argv, words, submitit_first):
    if submitit_first and not HAVE_SUBMITIT:
        pytest.skip("submitit is not installed (pip install sinddm[cluster]); it is checked first")
    images = _pictures(tmp_path / "images", 1)
    _recipe(tmp_path / "logs.yaml")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    device = [] if "--device" in args else ["--device", "cpu"]
    rc = cli("eval-suite", images, "--config", CONFIGS / "smoke.yaml", "--out", tmp_path / "suite", *device, *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and words in err[0]
    assert not (tmp_path / "suite").exists()


def test_without_submitit_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    images = _pictures(tmp_path / "images", 1)
    assert cli("eval-suite", images, "--config", CONFIGS / "smoke.yaml", "--out", tmp_path / "suite",
               "--device", "cpu", "--executor", "local") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --executor local/slurm needs submitit: pip install 'sinddm[cluster]'"]
