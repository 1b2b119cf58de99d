#!/usr/bin/env python
"""Detection transfer of a KDEP backbone (Faster R-CNN + FPN, VOC / COCO): `python detection/train_net.py --init CKPT`."""
from kdvision.detection.train_net import main

if __name__ == "__main__":
    main()
