#!/usr/bin/env python
"""Architecture search: ``python bin/search.py --config configs/darts.py:quick --workdir DIR``.

Re-running the same command with the same workdir resumes. See configs/*.py docstrings.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxdarts.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
