"""Data-free synthesis: one :class:`Synthesizer` interface (``synthesize()`` / ``sample(n)``) for the generative
baselines (DAFL, ZSKT, DFQ, DFAD), DeepInversion, CMI, Fast, Fast-Meta and RGAL, and the device-resident image pool.
"""
from .augment import CIFAR_AUGMENT, NO_AUGMENT, Augment, Normalizer, SynthesisViews, crop_flip
from .base import BestTracker, PoolSynthesizer, Synthesizer, sorted_targets
from .generative import GenerativeSynthesizer
from .inversion import CMISynthesizer, DeepInversionSynthesizer, FastMetaSynthesizer, FastSynthesizer
from .pool import ImagePool
from .rgal import AdvTripletSynthesizer

__all__ = ["CIFAR_AUGMENT", "NO_AUGMENT", "AdvTripletSynthesizer", "Augment", "BestTracker", "CMISynthesizer", "DeepInversionSynthesizer",
           "FastMetaSynthesizer", "FastSynthesizer", "GenerativeSynthesizer", "ImagePool", "Normalizer",
           "PoolSynthesizer", "SynthesisViews", "Synthesizer", "crop_flip", "sorted_targets"]
