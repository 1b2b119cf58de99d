#!/usr/bin/env python
"""Export a KDEP backbone: `python tools/convert_kdep.py INPUT OUTPUT --to detectron2|semseg --arch R18|R50|mnv2`."""
from kdvision.tools.convert_kdep import main

if __name__ == "__main__":
    main()
