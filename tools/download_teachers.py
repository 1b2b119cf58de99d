#!/usr/bin/env python
"""Fetch published teachers: `python tools/download_teachers.py --set repdistiller-cifar100` (SDD's fetch_pretrained_teachers.sh)."""
from kdvision.tools.download_teachers import main

if __name__ == "__main__":
    main()
