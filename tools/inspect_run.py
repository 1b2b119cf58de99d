#!/usr/bin/env python
"""Summaries, tables and PNG curves of run directories: `python tools/inspect_run.py RUN [RUN ...] [--seeds]`."""
from kdvision.tools.inspect_run import main

if __name__ == "__main__":
    main()
