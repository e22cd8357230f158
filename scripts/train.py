"""Same as `sinddm train ...`: python scripts/train.py IMAGE [options]."""
import sys

from sinddm.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
