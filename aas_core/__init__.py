"""Animate-A-Story core engine: retrieval, depth, generation, personalization, story assembly.

Importing this package is cheap: no model, torch or gradio is loaded until an engine is used.
"""

import os

# Idle OpenMP threads sleep instead of spinning (set before torch loads libgomp; an explicit setting wins).
# Spinning threads take the core the library reader decodes on: indexing ran 5-10% slower end to end,
# while the embedder alone runs as fast either way (bench/library.py; README, library figures).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
