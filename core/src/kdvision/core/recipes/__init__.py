"""Runnable recipes shared by several tasks: a config dataclass, the original flags and a ``run`` function.

A recipe is task-independent; a task subpackage supplies a :class:`~kdvision.core.recipes.task.TaskAdapter`
(metric, evaluator, sample rendering, losses) and its presets, and its entry scripts stay thin.
"""
