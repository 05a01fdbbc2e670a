"""nm-toolkit: network-management intelligence after NetGPT.

Importing the package switches the Hugging Face hub client to offline mode before any module
(ours: ``nm_toolkit.llm``, ``forecasting.llm``, ``intent.llm_extractor``) imports transformers:
no code path here may reach a model hub, and our commands draw their own progress bars.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

__version__ = "0.1.0"
