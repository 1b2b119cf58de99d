#!/usr/bin/env python
"""Data-free KD (CMI / Fast-Datafree engine): `python classification/kd_datafree.py --method cmi [datafree_kd.py flags]`."""
from kdvision.classification.datafree import main

if __name__ == "__main__":
    main(script="kd_datafree.py")
