#!/usr/bin/env python
"""Every method on equal terms against a ground truth:
``python bin/compare.py --config configs/compare.py:s5 --workdir DIR``.

Re-running the same command with the same workdir resumes. See configs/compare.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxdarts.cli import compare_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare_main())
