"""`python tests/pause_before_rename.py NAME SECONDS ARGS...` runs `python -m sinddm ARGS...` with
every rename onto a file called NAME held back SECONDS: an atomic write (`checkpoint.atomic_write`)
has then written and flushed its temporary file but not renamed it, so a test can kill the
process mid-save (tests/test_resume.py). The library itself has no such switch.
"""

import os
import runpy
import sys
import time


def main() -> None:
    name, seconds, args = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    real_replace = os.replace

    def replace(src, dst, *rest, **kwargs):
        if os.path.basename(os.fspath(dst)) == name:
            time.sleep(seconds)
        return real_replace(src, dst, *rest, **kwargs)

    os.replace = replace
    sys.path[0] = os.getcwd()  # as under `python -m`, not this script's folder
    sys.argv = ["sinddm", *args]
    runpy.run_module("sinddm", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
