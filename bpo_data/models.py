"""Model ids that name a model built or shipped locally instead of a Hub checkpoint.

``smoke`` is a tiny random LLaVA built from configs on first use (fast tests); any other id is a
llava-hf checkpoint id or a folder written by ``save_pretrained``.
"""

from __future__ import annotations

from bpo_data.smoke_model import SMOKE_MODEL_ID, ensure_smoke_model

LOCAL_MODELS = {SMOKE_MODEL_ID: "a tiny random LLaVA built locally; its answers are noise"}


def resolve_model(model_id: str) -> str:
    """The path or Hub id ``from_pretrained`` loads for ``model_id``."""
    if model_id == SMOKE_MODEL_ID:
        return str(ensure_smoke_model())
    return model_id
