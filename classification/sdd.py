#!/usr/bin/env python
"""KD / DKD / NKD / SDD on labelled data: `python classification/sdd.py --cfg CONFIG.yaml [--M 1,2,4] [KEY VALUE ...]`."""
from kdvision.classification.sdd import main

if __name__ == "__main__":
    main()
