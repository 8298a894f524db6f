"""Engines answer batches: vision engines (image + messages) and text engines (messages only)."""
