"""eval-suite's jobs on several processes, GPUs or a SLURM cluster, through submitit.

`executor_options` gathers and checks the options (a suite config file, then what the command
line gave); `run_jobs` runs one function per job spec with submitit's local executor (a process
per job, at most `jobs` at once, each with its own GPUs through CUDA_VISIBLE_DEVICES) or its SLURM
executor (a job array, at most `jobs` running), and reports each job's outcome. submitit is an
optional dependency (`pip install sinddm[cluster]`); nothing here imports it before it is needed.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

from ..errors import UserError

EXECUTORS = ("inline", "local", "slurm")
LOCAL_TIMEOUT_MIN = 60 * 24 * 30   # submitit's local default is 2 minutes; a local job runs as long as it takes
POLL_S = {"local": 0.5, "slurm": 15.0}


@dataclass
class ExecutorOptions:
    """Where eval-suite's jobs run. `gpus_per_job` None: 1 when the jobs use a GPU, else 0."""
    executor: str = "inline"
    jobs: int = 1
    gpus_per_job: int | None = None
    slurm_partition: str | None = None
    slurm_time: str | None = None          # minutes, or [D-]HH:MM[:SS]
    slurm_extra: dict = field(default_factory=dict)


SUITE_CONFIG_KEYS = tuple(f.name for f in fields(ExecutorOptions))


def executor_options(suite_config: str | Path | None = None, **given) -> ExecutorOptions:
    """ExecutorOptions from a suite config file (YAML, keys as ExecutorOptions' fields), overridden by
    the `given` values that are not None (the command line's options); checked."""
    values = read_suite_config(suite_config) if suite_config else {}
    values.update({k: v for k, v in given.items() if v is not None})
    if isinstance(values.get("slurm_extra"), (list, tuple)):
        values["slurm_extra"] = parse_extra(values["slurm_extra"])
    opts = ExecutorOptions(**values)
    if opts.executor not in EXECUTORS:
        raise UserError(f"--executor {opts.executor}: use one of {', '.join(EXECUTORS)}")
    if opts.executor == "slurm" and not opts.slurm_time:
        raise UserError("--executor slurm: give --slurm-time (minutes or [D-]HH:MM:SS; jobs beyond it are killed, "
                        "and resumed by the next run of the same command)")
    if opts.slurm_time:
        slurm_minutes(opts.slurm_time)
    return opts


def read_suite_config(path: str | Path) -> dict:
    """The executor keys of a suite config file, checked by type; an unknown key is an error."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--suite-config '{p}': no such file")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"--suite-config '{p}': not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise UserError(f"--suite-config '{p}': expected keys ({', '.join(SUITE_CONFIG_KEYS)})")
    types = {"executor": str, "jobs": int, "gpus_per_job": int, "slurm_partition": str, "slurm_time": (str, int),
             "slurm_extra": dict}
    for k, v in doc.items():
        if k not in types:
            raise UserError(f"--suite-config '{p}': unknown key '{k}'; known: {', '.join(SUITE_CONFIG_KEYS)}")
        if not isinstance(v, types[k]) or isinstance(v, bool):
            raise UserError(f"--suite-config '{p}': '{k}' has the wrong type ({type(v).__name__})")
        if k in ("jobs", "gpus_per_job") and v < (1 if k == "jobs" else 0):
            raise UserError(f"--suite-config '{p}': '{k}' must be at least {1 if k == 'jobs' else 0}")
    if "slurm_time" in doc:
        doc["slurm_time"] = str(doc["slurm_time"])
    if "slurm_extra" in doc:
        doc["slurm_extra"] = {str(k): str(v) for k, v in doc["slurm_extra"].items()}
    return doc


def parse_extra(items: Sequence[str]) -> dict:
    """KEY=VALUE strings (--slurm-extra account=lab qos=high) as a dict; KEY is an sbatch option name."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise UserError(f"--slurm-extra '{item}': give KEY=VALUE, KEY an sbatch option (account=mylab)")
        out[key.replace("-", "_")] = value
    return out


def slurm_minutes(text: str) -> int:
    """SLURM's time forms: MINUTES, [D-]HH:MM:SS, D-HH, D-HH:MM, MM:SS (rounded up to whole minutes)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        raise UserError(f"--slurm-time '{text}': give minutes or [D-]HH:MM:SS")
    d, a, b, c = (int(x) if x else None for x in m.groups())
    if d is not None:
        secs = d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:
        secs = a * 3600 + b * 60 + c
    elif b is not None:
        secs = a * 60 + b
    else:
        secs = a * 60
    if secs <= 0:
        raise UserError(f"--slurm-time '{text}': must be more than 0")
    return -(-secs // 60)


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--executor local/slurm needs submitit: pip install 'sinddm[cluster]'") from None
    return submitit


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def visible_gpu_ids() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them for this process (or their indices)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(n)]
    return [x.strip() for x in env.split(",") if x.strip()][:n]


def gpu_slots(opts: ExecutorOptions, device_name: str, visible: Sequence[str]) -> list[tuple[int, ...]]:
    """For the local executor: the GPUs of each of the `jobs` parallel slots, disjoint (two jobs never
    share a GPU); empty tuples when the jobs run on the CPU."""
    if device_name == "cpu" or (device_name == "auto" and not visible):
        if opts.gpus_per_job:
            raise UserError(f"--gpus-per-job {opts.gpus_per_job}: the jobs run on the CPU here "
                            f"(--device {device_name}, {len(visible)} GPUs visible); give --gpus-per-job 0")
        return [()] * opts.jobs
    if re.fullmatch(r"cuda:\d+", device_name):
        raise UserError(f"--device {device_name}: with --executor local each job gets its own GPUs; "
                        "give --device cuda (or auto)")
    g = 1 if opts.gpus_per_job is None else opts.gpus_per_job
    if g == 0:
        raise UserError(f"--gpus-per-job 0: the jobs run on a GPU (--device {device_name}); give --device cpu "
                        "for CPU jobs")
    if opts.jobs * g > len(visible):
        raise UserError(f"--jobs {opts.jobs} x --gpus-per-job {g}: needs {opts.jobs * g} GPUs, {len(visible)} "
                        "visible; lower --jobs (two jobs never share a GPU)")
    if not all(x.isdigit() for x in visible):
        raise UserError(f"CUDA_VISIBLE_DEVICES='{os.environ.get('CUDA_VISIBLE_DEVICES')}': --executor local needs "
                        "GPU indices there, not names")
    ids = [int(x) for x in visible]
    return [tuple(ids[k * g:(k + 1) * g]) for k in range(opts.jobs)]


def make_executor(opts: ExecutorOptions, folder: Path, *, gpus: tuple[int, ...] = (), threads: int = 1,
                  gpus_per_job: int = 1):
    """The submitit executor for `opts.executor`, its parameters set: local, for one slot (`gpus`,
    `threads` CPU threads), or SLURM (`gpus_per_job` GPUs a job, `opts.jobs` running at once).
    Jobs run this Python (sys.executable)."""
    submitit = import_submitit()
    folder.mkdir(parents=True, exist_ok=True)
    if opts.executor == "local":
        ex = submitit.LocalExecutor(folder, python=sys.executable)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=len(gpus), visible_gpus=tuple(gpus),
                             tasks_per_node=1, setup=[f"export OMP_NUM_THREADS={threads}"])
        return ex
    try:
        ex = submitit.SlurmExecutor(folder, python=sys.executable)
    except RuntimeError as e:
        raise UserError(f"--executor slurm: {e} (no 'srun' on PATH; run eval-suite on a login node)") from None
    params = dict(job_name="sinddm-eval-suite", time=slurm_minutes(opts.slurm_time), nodes=1, ntasks_per_node=1,
                  gpus_per_node=gpus_per_job or None, array_parallelism=opts.jobs,
                  additional_parameters=dict(opts.slurm_extra) or None)
    if opts.slurm_partition:
        params["partition"] = opts.slurm_partition
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def run_jobs(fn: Callable[[dict], object], specs: list[dict], opts: ExecutorOptions, folder: Path,
             device_name: str, log: Callable[[str], None]) -> dict[int, tuple[bool, object]]:
    """Run fn(spec) for every spec (each has 'tag' and 'log', its log file); returns index ->
    (True, fn's result) or (False, the reason: the last line of the job's log). A failed job does
    not stop the others."""
    if opts.executor == "slurm":
        return _run_slurm(fn, specs, opts, folder, device_name, log)
    return _run_local(fn, specs, opts, folder, device_name, log)


def _run_local(fn, specs, opts, folder, device_name, log):
    slots = gpu_slots(opts, device_name, visible_gpu_ids())
    base_threads = max(1, usable_cpus() // opts.jobs)
    executors = {}
    pending, running, outcomes = list(range(len(specs))), {}, {}
    try:
        while pending or running:
            for slot in range(len(slots)):
                if slot in running or not pending:
                    continue
                i = pending.pop(0)
                threads = specs[i].get("threads") or base_threads
                if slot not in executors:
                    executors[slot] = make_executor(opts, folder, gpus=slots[slot], threads=threads)
                job = executors[slot].submit(fn, dict(specs[i], threads=threads))
                gpus = ",".join(map(str, slots[slot])) or "none"
                log(f"{specs[i]['tag']}: started (local job {job.job_id}, GPUs {gpus}, {threads} threads; "
                    f"log {specs[i]['log']})")
                running[slot] = (i, job)
            for slot, (i, job) in list(running.items()):
                if job.done():
                    outcomes[i] = _outcome(job, specs[i], log)
                    del running[slot]
            if running:
                time.sleep(POLL_S["local"])
    except BaseException:
        for i, job in running.values():  # a local job would outlive us and keep writing its run
            job.cancel(check=False)
            log(f"{specs[i]['tag']}: stopped (local job {job.job_id})")
        raise
    return outcomes


def _run_slurm(fn, specs, opts, folder, device_name, log):
    g = opts.gpus_per_job if opts.gpus_per_job is not None else (0 if device_name == "cpu" else 1)
    ex = make_executor(opts, folder, gpus_per_job=g)
    with ex.batch():
        jobs = [ex.submit(fn, spec) for spec in specs]
    for spec, job in zip(specs, jobs):
        log(f"{spec['tag']}: submitted (SLURM job {job.job_id}; log {spec['log']})")
    outcomes, waiting = {}, set(range(len(specs)))
    try:
        while waiting:
            for i in sorted(waiting):
                if jobs[i].done():
                    outcomes[i] = _outcome(jobs[i], specs[i], log)
                    waiting.discard(i)
            if waiting:
                time.sleep(POLL_S["slurm"])
    except KeyboardInterrupt:
        log(f"stopped waiting; {len(waiting)} SLURM jobs keep running (squeue --me; scancel them before running "
            "the same command again)")
        raise
    return outcomes


def _outcome(job, spec: dict, log: Callable[[str], None]) -> tuple[bool, object]:
    try:
        result = job.result()
    except Exception as e:  # failed, killed, timed out: the job's own log says best what happened
        why = last_line(Path(spec["log"]))
        if not why.startswith("error:"):  # killed (a signal, a time limit, a lost node) or crashed
            said = why or "(empty log; submitit: " + (str(e).strip().splitlines() or [type(e).__name__])[0] + ")"
            why = f"ended without an error line (killed?); last line: {said}"
        log(f"{spec['tag']}: FAILED: {why} (log {spec['log']})")
        return False, why
    log(f"{spec['tag']}: done")
    return True, result


def last_line(path: Path) -> str:
    """The last non-empty line of a text file ('' if there is none)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
