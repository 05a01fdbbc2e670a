"""Edge and cloud language models: offline checkpoints, LoRA adapters, NetGPT prompt completion and serving."""
