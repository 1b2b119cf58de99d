#!/usr/bin/env python
"""Install the Visdom server's static files from the npm registry (offline dashboards): `python tools/visdom_assets.py`."""
from kdvision.tools.visdom_assets import main

if __name__ == "__main__":
    main()
