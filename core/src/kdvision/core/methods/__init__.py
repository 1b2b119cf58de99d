"""Task-independent training methods (the DFAD game, ...); task subpackages bring data, metrics and configs."""
