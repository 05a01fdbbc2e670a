"""Edge and cloud language models: offline checkpoints, LoRA adapters, NetGPT prompt completion and serving.

Importing the package switches the Hugging Face hub client to offline mode before transformers is
imported by any of its modules: no code path here may reach a model hub.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our commands draw their own progress
