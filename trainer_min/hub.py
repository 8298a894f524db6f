"""Can the model or dataset a command names be loaded? Said in seconds, before anything heavy starts.

transformers and datasets answer a wrong model or dataset id only after their Hub retries (half a minute
or more offline), and then with a paragraph. Here a local folder is checked on disk; a Hub id is looked up
in the local cache when ``HF_HUB_OFFLINE`` is set, else asked about once (one HEAD request, no retries),
so an unknown, gated or unreachable id is one :class:`ModelSourceError` naming the flag and the next step.
"""

from __future__ import annotations

from pathlib import Path

from trainer_min.data import HUB_ID
from trainer_min.errors import UserError

DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"  # the paper's LLaVA-1.5-7B
CONFIG = "config.json"
PROBE_TIMEOUT_S = 10.0


_FOUND: set[tuple[str, str | None]] = set()  # Hub models the Hub has confirmed in this process


class ModelSourceError(UserError):
    """A model or dataset that cannot be loaded as named; the message says which flag and what to do."""


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_model(name: str, flag: str, revision: str | None = None) -> None:
    """Raise ModelSourceError unless ``name`` is a model folder here or a Hub model this machine can load."""
    if (name, revision) in _FOUND:
        return  # asked already in this process (a command's early check, then the Python API's own)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise ModelSourceError(
                f"{flag} {name}: the folder holds no {CONFIG}; give a folder written by save_pretrained "
                "(or a Hub model id)"
            )
        return
    if path.exists() or HUB_ID.fullmatch(name) is None or (path.parent != Path(".") and path.parent.is_dir()):
        raise ModelSourceError(
            f"{flag} {name}: no such model folder; give a folder written by save_pretrained"
        )

    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, CONFIG, revision=revision), str)
    download = f"download it where there is network (`hf download {name}`) or give a local folder"
    if hub_offline():
        if not cached:
            raise ModelSourceError(
                f"{flag} {name}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {download}"
            )
        return
    _probe(name, flag, revision, "model", cached, download)
    _FOUND.add((name, revision))


def check_dataset(name: str, flag: str, revision: str | None = None) -> None:
    """For a Hub dataset id (a local folder is checked elsewhere): does the Hub know it, and can we ask?"""
    if Path(name).expanduser().exists() or hub_offline():
        return  # offline, `datasets` answers from its cache at once
    download = "give the folder written by `bpo-data export`, or rerun with HF_HUB_OFFLINE=1 if it is cached"
    _probe(name, flag, revision, "dataset", False, download)


def _probe(name: str, flag: str, revision: str | None, kind: str, cached: bool, download: str) -> None:
    """One request to the Hub, no retries; its failure said in one line with what to do."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    revision_flag = "--model-revision" if kind == "model" else "--dataset-revision"
    try:
        if kind == "model":
            get_hf_file_metadata(hf_hub_url(name, CONFIG, revision=revision), timeout=PROBE_TIMEOUT_S)
        else:
            HfApi().dataset_info(name, revision=revision, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        raise ModelSourceError(
            f"{flag} {name} is gated on the Hub: accept its terms at https://huggingface.co/"
            f"{'datasets/' if kind == 'dataset' else ''}{name} and log in with `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise ModelSourceError(
            f"{flag} {name}: no such {kind} on the Hub (nor a folder here); check the id, or log in with "
            "`hf auth login` if it is private"
        ) from None
    except RevisionNotFoundError:
        raise ModelSourceError(
            f"{revision_flag} {revision}: {name} has no such revision on the Hub"
        ) from None
    except RemoteEntryNotFoundError:
        raise ModelSourceError(
            f"{flag} {name}: the Hub repository has no {CONFIG}, so it is not a transformers model"
        ) from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise ModelSourceError(f"{flag} {name}: the Hub answered HTTP {status}; try again later") from None
    except Exception as err:  # no network: DNS, refused, timeout (the HTTP client's own error types)
        reason = f"{type(err).__name__}: {err}".strip()
        if cached:
            raise ModelSourceError(
                f"{flag} {name}: cannot reach the Hub ({reason}); the model is in the local cache, so rerun "
                "with HF_HUB_OFFLINE=1"
            ) from None
        raise ModelSourceError(f"{flag} {name}: cannot reach the Hub ({reason}); {download}") from None
