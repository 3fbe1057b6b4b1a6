"""Animate-A-Story core engine: retrieval, depth, generation, personalization, story assembly.

Importing this package is cheap: no model, torch or gradio is loaded until an engine is used.
"""

__version__ = "0.1.0"
