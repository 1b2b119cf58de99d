#!/usr/bin/env python
"""Train a DeepLabV3 segmentation teacher on CamVid or NYUv2 (flags of DFAD's train_teacher_seg.py)."""
from kdvision.segmentation.teacher import main

if __name__ == "__main__":
    main()
