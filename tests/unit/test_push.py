"""Push: the Hub call pattern (repo, upload, tag on the uploaded commit) and the version-tag rule.

The Hub is a remote service these tests cannot reach, so a recording stand-in for ``HfApi`` takes
its place; it returns the same ``huggingface_hub`` types the real client does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.hf_api import CommitInfo, GitRefInfo, GitRefs

from bpo_data.push import PushError, check_tag, push_dataset

OID = "3f" * 20


class RecordingHub:
    """Records each call with its arguments and what the folder held at upload time."""

    def __init__(self, tags: tuple[str, ...] = ()):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.tags = tags
        self.uploaded: list[str] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", (repo_id,), kwargs))

    def list_repo_refs(self, repo_id, **kwargs):
        self.calls.append(("list_repo_refs", (repo_id,), kwargs))
        refs = [GitRefInfo(name=t, ref=f"refs/tags/{t}", target_commit="0" * 40) for t in self.tags]
        return GitRefs(branches=[], converts=[], tags=refs)

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", (), kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        return CommitInfo(
            commit_url=f"https://huggingface.co/datasets/{kwargs['repo_id']}/commit/{OID}",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid=OID,
        )

    def create_tag(self, repo_id, **kwargs):
        self.calls.append(("create_tag", (repo_id,), kwargs))


@pytest.fixture
def export_dir(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# card\n")
    (tmp_path / "export_stats.json").write_text("{}")
    return tmp_path


def test_push_creates_uploads_and_tags_the_uploaded_commit(export_dir):
    hub = RecordingHub()
    url = push_dataset(export_dir, "me/bpo", "v1.2.3", private=True, api=hub)

    assert [name for name, _, _ in hub.calls] == [
        "create_repo",
        "list_repo_refs",
        "upload_folder",
        "create_tag",
    ]
    _, args, kwargs = hub.calls[0]
    assert args == ("me/bpo",) and kwargs == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert hub.calls[2][2] == {
        "repo_id": "me/bpo",
        "folder_path": str(export_dir),
        "repo_type": "dataset",
        "commit_message": "bpo-data v1.2.3",
    }
    assert hub.uploaded == ["README.md", "data/train-00000-of-00001.parquet", "export_stats.json"]
    _, args, kwargs = hub.calls[3]
    assert args == ("me/bpo",) and kwargs == {"tag": "v1.2.3", "revision": OID, "repo_type": "dataset"}
    assert url == f"https://huggingface.co/datasets/me/bpo/commit/{OID}"


@pytest.mark.parametrize("tag", ["v1.2", "v1.2.3-", "latest", "v01.2.3", "V1.2.3", "v1.2.3 "])
def test_a_tag_that_is_not_vX_Y_Z_is_refused_before_any_hub_call(export_dir, tag):
    hub = RecordingHub()
    with pytest.raises(PushError, match="vMAJOR.MINOR.PATCH"):
        push_dataset(export_dir, "me/bpo", tag, api=hub)
    assert hub.calls == []


def test_valid_tags_pass_and_are_spelled_with_a_v():
    tags = ("v0.0.1", "v1.0.0", "v10.20.30", "1.2.3")
    assert [check_tag(t) for t in tags] == ["v0.0.1", "v1.0.0", "v10.20.30", "v1.2.3"]


def test_an_existing_tag_stops_the_push_before_uploading(export_dir):
    hub = RecordingHub(tags=("v1.0.0",))
    with pytest.raises(PushError, match="already has tag v1.0.0"):
        push_dataset(export_dir, "me/bpo", "v1.0.0", api=hub)
    assert "upload_folder" not in [name for name, _, _ in hub.calls]


def test_a_folder_that_is_not_an_export_is_refused(tmp_path):
    hub = RecordingHub()
    with pytest.raises(PushError, match="run `bpo-data export` first"):
        push_dataset(tmp_path, "me/bpo", "v1.0.0", api=hub)
    assert hub.calls == []
