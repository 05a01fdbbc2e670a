"""Edge and cloud language models: offline checkpoints, LoRA adapters, NetGPT prompt completion and serving.

The hub client is pinned offline by ``nm_toolkit/__init__.py``, which runs before this package.
"""
