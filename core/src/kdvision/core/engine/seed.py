"""Seeding and capture/restore of every RNG stream, for bit-exact resume."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def rng_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state()
    # Only tensors and plain Python values, so that checkpoints load with ``weights_only=True``.
    numpy_state = {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    np.random.set_state(_as_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(s: Any) -> tuple:
    # weights_only loading turns the inner tuple into a list; random.setstate needs tuples.
    return (s[0], tuple(s[1]), s[2])


def _as_numpy_state(s: dict[str, Any]) -> tuple:
    key = s["key"].numpy().astype(np.uint32)
    return (s["name"], key, s["pos"], s["has_gauss"], s["cached_gaussian"])
