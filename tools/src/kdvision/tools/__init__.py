"""kdvision tools: Visdom dashboards, checkpoint converters, dataset preparation."""

__version__ = "0.1.0"
