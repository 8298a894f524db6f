"""Publish an export to the Hugging Face Hub as one commit, tagged with the dataset version.

The tag is created on the exact commit the upload returned, so ``load_dataset(repo, revision="v1.2.0")``
always gives the files that were pushed under that version even if the branch moves on.
The token comes from ``token``, ``HF_TOKEN`` or ``huggingface-cli login`` and is never printed.

Versions are spelled one way everywhere: ``export --version`` and ``push --tag`` both take ``1.2.0``
or ``v1.2.0``; the card says ``1.2.0`` and the Hub tag is ``v1.2.0``. The tag must be the export's
version, and the card's ``load_dataset`` line is set to the repo it is pushed to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from bpo_data.export import CARD_FILE, DATA_DIR, STATS_FILE, ExportError, normalise_version


class PushError(ValueError):
    """A push that must not start (or could not reach the Hub); the message says what to fix."""


def check_tag(tag: str) -> str:
    """``vX.Y.Z`` or ``X.Y.Z`` as the Hub tag ``vX.Y.Z``."""
    try:
        return "v" + normalise_version(tag)
    except ExportError:
        raise PushError(f"--tag {tag!r} is not a version like v1.0.0: give vMAJOR.MINOR.PATCH") from None


def _export_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / STATS_FILE).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def set_repo_id(card: Path, repo_id: str) -> None:
    """Point the card's ``load_dataset("…")`` line at ``repo_id`` (the placeholder, or an earlier repo)."""
    text = card.read_text(encoding="utf-8")
    marker = 'load_dataset("'
    start = text.find(marker)
    if start < 0:
        return
    start += len(marker)
    end = text.find('"', start)
    current = text[start:end]
    if current != repo_id:
        card.write_text(
            text.replace(f'load_dataset("{current}"', f'load_dataset("{repo_id}"'), encoding="utf-8"
        )


def _from_the_network(err: Exception) -> bool:
    """An HTTP or connection error, whichever HTTP client huggingface_hub uses (httpx, a fork, requests)."""
    module = type(err).__module__.split(".")[0]
    return isinstance(err, (HfHubHTTPError, OSError)) or module.startswith(("httpx", "requests", "urllib3"))


def _hub_error(err: Exception, repo_id: str) -> PushError:
    """A Hub failure as one sentence with the next step."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return PushError(
            f"the Hub refused the push to {repo_id} (HTTP {status}): log in with `huggingface-cli login` or "
            "set HF_TOKEN to a token with write access to that namespace"
        )
    if isinstance(err, HfHubHTTPError):
        return PushError(f"the Hub refused the push to {repo_id}: {str(err).splitlines()[0]}")
    return PushError(
        f"cannot reach the Hugging Face Hub to push {repo_id} ({type(err).__name__}); check the network "
        "(and HF_ENDPOINT, proxies; HF_HUB_OFFLINE must be unset), then rerun: nothing was tagged"
    )


def push_dataset(
    dir: str | os.PathLike,
    repo_id: str,
    tag: str | None = None,
    private: bool = False,
    token: str | None = None,
    api: HfApi | None = None,
) -> str:
    """Upload the export in ``dir`` to the dataset repo ``repo_id``, tag that commit, return its URL.

    ``tag`` defaults to the export's version (``v`` + ``export_stats.json``'s version).
    """
    folder = Path(dir)
    if not (folder / CARD_FILE).is_file() or not (folder / DATA_DIR).is_dir():
        raise PushError(
            f"{folder} is not a bpo-data export (no {CARD_FILE} or {DATA_DIR}/): run `bpo-data export` first"
        )
    version = _export_version(folder)
    if tag is None and version is None:
        raise PushError(f"{folder}/{STATS_FILE} names no version: give --tag vMAJOR.MINOR.PATCH")
    tag = check_tag(tag if tag is not None else version)
    if version is not None and check_tag(version) != tag:
        raise PushError(
            f"--tag {tag} but {folder} is version {version}: export again with --version {tag[1:]}, "
            "or leave --tag out to use the export's version"
        )
    hub = api if api is not None else HfApi(token=token)
    try:
        hub.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        # Checked before uploading: a taken tag found after the upload would leave an untagged commit behind.
        if any(ref.name == tag for ref in hub.list_repo_refs(repo_id, repo_type="dataset").tags):
            raise PushError(f"{repo_id} already has tag {tag}: a version is published once; bump the version")
        set_repo_id(folder / CARD_FILE, repo_id)  # the Hub answered: the card may now name the repo
        commit = hub.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="dataset", commit_message=f"bpo-data {tag}"
        )
        hub.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset")
    except Exception as err:
        if not _from_the_network(err):
            raise
        raise _hub_error(err, repo_id) from err
    return commit.commit_url
