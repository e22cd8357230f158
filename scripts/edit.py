"""Same as `sinddm edit ...`: python scripts/edit.py RUN_DIR MODE [options]."""
import sys

from sinddm.cli import main

sys.exit(main(["edit", *sys.argv[1:]]))
