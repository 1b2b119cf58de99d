#!/usr/bin/env python
"""`make demo`: teacher on the embedded digits data, then a data-free DFAD student (see kdvision.classification.demo)."""
import sys

from kdvision.classification.demo import main

if __name__ == "__main__":
    sys.exit(main())
