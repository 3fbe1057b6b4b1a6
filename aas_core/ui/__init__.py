"""The Gradio app over `aas_core` (the only package that imports gradio): one module per tab plus assembly and sessions."""
