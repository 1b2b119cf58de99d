#!/usr/bin/env python
"""DFAD on camvid: DeepLabV3-ResNet50 teacher -> DeepLabV3-MobileNetV2 student, no real data (flags of the original)."""
from kdvision.segmentation.dfad import main

if __name__ == "__main__":
    main("camvid")
