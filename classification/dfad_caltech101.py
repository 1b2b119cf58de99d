#!/usr/bin/env python
"""DFAD on caltech101: `python classification/dfad_caltech101.py --ckpt TEACHER.pt [original DFAD_caltech101.py flags]`."""
from kdvision.classification.dfad import main

if __name__ == "__main__":
    main("caltech101")
