"""bpo-data: preference pairs that teach a multimodal LLM to trust the image over its language prior."""

__version__ = "0.1.0"
