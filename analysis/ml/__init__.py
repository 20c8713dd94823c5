"""Machine-learning code for the dental imaging platform.

This package is plain Python + PyTorch and must never import Django: the web side imports
:mod:`analysis.ml.infer` and talks to it through plain Python objects.
"""

LABELS = ["caries", "gingivitis", "calculus", "ulcer"]
"""Output order of the photo classifier. ``healthy`` is the absence of every label."""

ALL_MANIFEST_LABELS = LABELS + ["healthy"]
