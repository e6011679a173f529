#!/usr/bin/env python
"""See jaxdarts.cli.report_main: ``python bin/report.py --help``."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxdarts.cli import report_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(report_main())
