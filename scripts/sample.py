"""Same as `sinddm sample ...`: python scripts/sample.py RUN_DIR [options]."""
import sys

from sinddm.cli import main

sys.exit(main(["sample", *sys.argv[1:]]))
