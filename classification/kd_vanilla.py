#!/usr/bin/env python
"""Blind KD (KD on out-of-domain images only): `python classification/kd_vanilla.py [kd_vanilla.py flags]`."""
from kdvision.classification.mosaickd import main

if __name__ == "__main__":
    main(script="kd_vanilla")
