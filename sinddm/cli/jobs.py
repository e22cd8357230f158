"""`sinddm run JOBS.yaml`: a list of sample/edit jobs, every one checked before the first writes,
each model loaded once (a `ModelCache` passed to every job's plan)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from .common import ModelCache
from .edit import cmd_edit, edit_plan
from .sample import cmd_sample, sample_plan

JOB_COMMANDS = {"sample": (sample_plan, cmd_sample), "edit": (edit_plan, cmd_edit)}


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="run a YAML list of sample/edit jobs in one process",
                       description="Run JOBS.yaml: a list of jobs, each {sample: {...}} or {edit: {...}} whose\n"
                                   "keys are the command's options without dashes (model and mode included).\n"
                                   "Every job is checked before the first one runs; models load once. Paths\n"
                                   "are relative to the current folder. Example:\n\n"
                                   "  - sample: {model: runs/rocket, num: 8, scale_hw: [1, 2], out: out/pano}\n"
                                   "  - edit: {model: runs/rocket, mode: style-transfer, content: c.png, "
                                   "out: out/style}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("jobs", metavar="JOBS.yaml", help="the job list (YAML)")


def job_argv(job, index: int, source: str) -> list[str]:
    """One job mapping → the argv of the same command line."""
    if not isinstance(job, dict) or len(job) != 1:
        raise UserError(f"{source}: job {index + 1} must be a mapping with one key, 'sample' or 'edit'")
    (command, opts), = job.items()
    if command not in JOB_COMMANDS:
        raise UserError(f"{source}: job {index + 1}: unknown command '{command}'; use sample or edit")
    if opts is not None and not isinstance(opts, dict):
        raise UserError(f"{source}: job {index + 1}: '{command}' must map option names to values, e.g. "
                        f"{{{command}: {{model: runs/x, num: 4}}}}")
    opts = {str(k).lstrip("-"): v for k, v in (opts or {}).items()}  # '--num' and 'num' both name --num
    if "help" in opts:
        raise UserError(f"{source}: job {index + 1}: 'help' is not a job option; see 'sinddm {command} --help'")
    if isinstance(opts.get("size"), list) and len(opts["size"]) == 2:
        opts["size"] = "x".join(map(str, opts["size"]))  # [H, W], the natural YAML form of --size HxW
    if "model" not in opts:
        raise UserError(f"{source}: job {index + 1}: 'model' is missing (a run folder or model file)")
    argv = [command, str(opts.pop("model"))]
    if command == "edit":
        if "mode" not in opts:
            raise UserError(f"{source}: job {index + 1}: 'mode' is missing for an edit job")
        argv.append(str(opts.pop("mode")))
    for key, value in opts.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _read_jobs(path: Path) -> list:
    import yaml

    if not path.is_file():
        raise UserError(f"jobs file '{path}': no such file; give a YAML list of jobs")
    try:
        jobs = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UserError(f"jobs file '{path}': not valid YAML; fix the syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"jobs file '{path}': not a text file; give a YAML list of jobs") from None
    except OSError as e:
        raise UserError(f"jobs file '{path}': cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(jobs, list) or not jobs:
        raise UserError(f"jobs file '{path}': expected a non-empty YAML list of jobs")
    return jobs


def _job_parser() -> argparse.ArgumentParser:
    """`sinddm` with only the commands a job may run (so this module needs no import of the whole CLI)."""
    from .common import EPILOG, Parser
    from .edit import add_parsers as add_edit
    from .sample import add_parsers as add_sample

    p = Parser(prog="sinddm", epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    add_sample(sub)
    add_edit(sub)
    return p


def cmd_run(args) -> int:
    path = Path(args.jobs)
    jobs = _read_jobs(path)
    parser = _job_parser()
    parsed = []
    for i, job in enumerate(jobs):
        argv = job_argv(job, i, f"jobs file '{path}'")
        try:
            parsed.append(parser.parse_args(argv))
        except UserError as e:
            raise UserError(f"jobs file '{path}': job {i + 1}: {e}") from None
    cache = ModelCache()
    plans, writers = [], {}
    for i, job_args in enumerate(parsed):  # every job is checked before the first one runs
        try:
            plans.append(JOB_COMMANDS[job_args.command][0](job_args, cache))
        except UserError as e:
            raise UserError(f"jobs file '{path}': job {i + 1}: {e}") from None
        out = plans[-1]["out"].resolve()
        if out in writers:
            raise UserError(f"jobs file '{path}': jobs {writers[out]} and {i + 1} both write to "
                            f"'{plans[-1]['out']}'; give each job its own 'out'")
        writers[out] = i + 1
    for i, (job_args, plan) in enumerate(zip(parsed, plans)):
        print(f"job {i + 1}/{len(parsed)}: {job_args.command} {job_args.model}", file=sys.stderr)
        JOB_COMMANDS[job_args.command][1](job_args, plan)
    return 0


COMMANDS = {"run": cmd_run}
