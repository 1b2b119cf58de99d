#!/usr/bin/env python
"""KDEP pre-training: `python pretraining/kdep.py imgnet_128k exp_name 90 30 5e-4 0` (KDEP_MS-R50_R18.sh's arguments)."""
from kdvision.pretraining.kdep import main

if __name__ == "__main__":
    main("kdep")
