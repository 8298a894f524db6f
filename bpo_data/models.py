"""Model ids that name a model built or shipped locally instead of a Hub checkpoint.

``world`` is the miniature world's tiny LLaVA, trained on its scenes and shipped with the package
(the demo's model: its image-weakened answers show a real language prior); ``smoke`` is a tiny
random LLaVA built from configs on first use (fast tests); any other id is a llava-hf checkpoint id
or a folder written by ``save_pretrained``.

A Hub id is looked up in the local cache first and loaded from there by path, so a cached model
never touches the network. One that is not cached is asked about once, with a short timeout and no
retries: offline, the Hub client would otherwise retry for over a minute before giving up.
"""

from __future__ import annotations

import os
from pathlib import Path

from bpo_data.smoke_model import SMOKE_MODEL_ID, ensure_smoke_model
from bpo_data.world.model import WORLD_MODEL_ID, world_model_dir

LOCAL_MODELS = {
    WORLD_MODEL_ID: "the miniature world's tiny LLaVA, shipped with bpo-data (bpo_data/world/model)",
    SMOKE_MODEL_ID: "a tiny random LLaVA built locally; its answers are noise",
}
HUB_PROBE_TIMEOUT_S = 10.0


class ModelNotFound(ValueError):
    """A model id that is neither local, cached nor reachable on the Hub; the message says what to do."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_snapshot(model_id: str) -> str | None:
    """The cached snapshot folder of a Hub id (its config file is there), or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(model_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None
    return folder if (Path(folder) / "config.json").is_file() else None


def _probe_hub(model_id: str) -> None:
    """One request that says whether the Hub has ``model_id``; raises ``ModelNotFound`` otherwise."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    download = f"`huggingface-cli download {model_id}` on a machine with a network"
    try:
        HfApi().model_info(model_id, timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError:
        raise ModelNotFound(
            f"--model {model_id}: the model is gated on the Hub; accept its terms on huggingface.co and "
            "log in (`huggingface-cli login` or HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFound(
            f"--model {model_id}: no such model on the Hub (or it is private); check the id "
            "(e.g. llava-hf/llava-1.5-7b-hf), give a folder written by save_pretrained, or 'smoke'"
        ) from None
    except HFValidationError:
        raise ModelNotFound(
            f"--model {model_id}: neither a folder nor a Hub id (namespace/name); "
            "give a llava-hf id, a folder written by save_pretrained, or 'smoke'"
        ) from None
    except Exception as err:  # noqa: BLE001 - a connection or HTTP error of whichever client is installed
        raise ModelNotFound(
            f"--model {model_id}: not in the local Hugging Face cache and the Hub cannot be reached "
            f"({type(err).__name__}); download it with {download}, or give a local folder"
        ) from None


# Hub ids the Hub confirmed in this process: the CLI checks before it writes anything and generate()
# checks for API callers, so without this an uncached id would cost two Hub requests. Only the
# network answer is remembered: folders and the local cache are looked at again (cheap, and a folder
# removed meanwhile must not pass), and failures are not kept (a download made meanwhile is seen).
_FOUND_ON_HUB: set[str] = set()


def check_model(model_id: str) -> None:
    """Fail fast (``ModelNotFound``) when ``model_id`` cannot be loaded here; cheap and builds nothing."""
    if model_id == SMOKE_MODEL_ID or Path(model_id).expanduser().is_dir():
        return
    if model_id == WORLD_MODEL_ID:
        _world_model()
        return
    if model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1:
        raise ModelNotFound(
            f"--model {model_id}: no such folder; give a folder written by save_pretrained, "
            "a llava-hf id (e.g. llava-hf/llava-1.5-7b-hf) or 'smoke'"
        )
    if _cached_snapshot(model_id) is not None:
        return
    if _offline():
        raise ModelNotFound(
            f"--model {model_id}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; download "
            f"it with `huggingface-cli download {model_id}` on a machine with a network, "
            "or give a local folder"
        )
    if model_id not in _FOUND_ON_HUB:
        _probe_hub(model_id)
        _FOUND_ON_HUB.add(model_id)


def resolve_model(model_id: str) -> str:
    """The path or Hub id ``from_pretrained`` loads for ``model_id`` (a cached snapshot by its path)."""
    if model_id == SMOKE_MODEL_ID:
        return str(ensure_smoke_model())
    if model_id == WORLD_MODEL_ID:
        return str(_world_model())
    if Path(model_id).expanduser().is_dir():
        return model_id
    cached = _cached_snapshot(model_id)
    if cached is not None:
        return cached
    check_model(model_id)
    return model_id


def _world_model() -> Path:
    try:
        return world_model_dir()
    except FileNotFoundError as err:
        raise ModelNotFound(f"--model world: {err}") from None
