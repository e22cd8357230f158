"""What the benchmark scripts share: the machine's name for a report, and the JSON report writer.

Imported as `_report` (a script's own folder is first on sys.path when it runs as
`python benchmarks/NAME.py`)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (for benchmark reports)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(path: str | Path, report: dict) -> None:
    """Write `report` to `path` (folders made as needed) through a temporary file and a rename, so
    a reader, or a run killed mid-write, never sees half a file. Values JSON cannot hold are written
    as their str()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, path)
