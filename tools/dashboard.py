#!/usr/bin/env python
"""Offline Visdom dashboard that replays run directories: `python tools/dashboard.py --port 8097 RUN_DIR ...`."""
from kdvision.tools.dashboard import main

if __name__ == "__main__":
    main()
