"""Publish an export to the Hugging Face Hub as one commit, tagged with the dataset version.

The tag is created on the exact commit the upload returned, so ``load_dataset(repo, revision="v1.2.0")``
always gives the files that were pushed under that version even if the branch moves on.
The token comes from ``token``, ``HF_TOKEN`` or ``huggingface-cli login`` and is never printed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import HfApi

from bpo_data.export import CARD_FILE, DATA_DIR

_TAG = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


class PushError(ValueError):
    """A push that must not start; the message says what to fix."""


def check_tag(tag: str) -> str:
    """Accept ``vX.Y.Z`` (semantic version with a leading v), the form the dataset's versions take."""
    if not _TAG.fullmatch(tag):
        raise PushError(f"tag {tag!r} is not a version like v1.0.0: give --tag vMAJOR.MINOR.PATCH")
    return tag


def push_dataset(
    dir: str | os.PathLike,
    repo_id: str,
    tag: str,
    private: bool = False,
    token: str | None = None,
    api: HfApi | None = None,
) -> str:
    """Upload the export in ``dir`` to the dataset repo ``repo_id``, tag that commit, return its URL."""
    check_tag(tag)
    folder = Path(dir)
    if not (folder / CARD_FILE).is_file() or not (folder / DATA_DIR).is_dir():
        raise PushError(
            f"{folder} is not a bpo-data export (no {CARD_FILE} or {DATA_DIR}/): run `bpo-data export` first"
        )
    hub = api if api is not None else HfApi(token=token)
    hub.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # Checked before uploading: a taken tag found after the upload would leave an untagged commit behind.
    if any(ref.name == tag for ref in hub.list_repo_refs(repo_id, repo_type="dataset").tags):
        raise PushError(f"{repo_id} already has tag {tag}: a version is published once; bump the version")
    commit = hub.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="dataset", commit_message=f"bpo-data {tag}"
    )
    hub.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset")
    return commit.commit_url
