#!/usr/bin/env python
"""See jaxdarts.cli.eval_main: ``python bin/eval.py --help``."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxdarts.cli import eval_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(eval_main())
