"""Intent inference: operator intents (Nile entities) and user service intents, two extraction
paths (scikit-learn tagger, LoRA-tuned edge LLM) behind one interface, Nile compilation, conflict
detection, and the intent service that turns prompt streams into demand series."""
