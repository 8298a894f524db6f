"""The pair preview page: N pairs per source x negative type from a generation folder or its export (the
same pairs from both, whatever the file order), self-contained, word differences marked, unsafe image paths
not followed. The page's filters run in a real browser in tests/e2e/test_preview.py."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from PIL import Image
from support.trainer import build_export

from bpo_data.preview import PreviewError, preview, word_diff


class Cards(HTMLParser):
    """The page's pair cards: (source, negative type, key, image src) for each ``<article class="pair">``."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str]] = []
        self._in_code = False
        self.sources: list[str] = []  # every src and href, to check nothing is fetched from elsewhere

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "article":
            self.cards.append({"source": found["data-source"], "type": found["data-type"], "image": ""})
        if tag == "code" and self.cards:
            self._in_code = True
        if tag == "img" and self.cards:
            self.cards[-1]["image"] = found["src"] or ""
        self.sources += [value or "" for name, value in attrs if name in ("src", "href")]

    def handle_data(self, data: str) -> None:
        if self._in_code:
            self.cards[-1]["key"] = data
            self._in_code = False


def cards_of(page) -> Cards:
    parser = Cards()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """6 units x (weaken, inject) over two sources: groups of 3 pairs, in a generation folder and exported."""
    base = tmp_path_factory.mktemp("preview")
    export = build_export(base, units=6, sources=("sharegpt4v", "llavar"))
    return base / "out", export


def test_word_diff_marks_only_the_words_that_differ_and_escapes_markup():
    chosen, rejected = word_diff(
        "A red car is parked left of <b>the</b> tree.", "A blue car is parked right of <b>the</b> tree."
    )
    assert chosen == "A <del>red</del> car is parked <del>left</del> of &lt;b&gt;the&lt;/b&gt; tree."
    assert rejected == "A <ins>blue</ins> car is parked <ins>right</ins> of &lt;b&gt;the&lt;/b&gt; tree."
    assert word_diff("same words", "same words") == ("same words", "same words")


def test_a_generation_folder_and_its_export_show_the_same_pairs(made, tmp_path):
    folder, export = made
    from_folder = preview(folder, tmp_path / "folder.html", per_group=2)
    from_export = preview(export, tmp_path / "export.html", per_group=2)
    groups = {(s, t) for s in ("sharegpt4v", "llavar") for t in ("weaken", "inject")}
    assert from_folder.total == from_export.total == dict.fromkeys(groups, 3)
    assert from_folder.shown == from_export.shown == dict.fromkeys(groups, 2)
    folder_cards, export_cards = cards_of(from_folder.path), cards_of(from_export.path)
    assert len(folder_cards.cards) == 8
    assert [c["key"] for c in folder_cards.cards] == [c["key"] for c in export_cards.cards]
    for card in folder_cards.cards + export_cards.cards:
        assert card["key"].startswith(f"{card['source']}/") and card["key"].endswith(f"#{card['type']}")
        assert card["image"].startswith("data:image/jpeg;base64,")
    # self-contained: every src and href is inline data or a link into the page itself
    assert all(src.startswith(("data:", "#")) for src in folder_cards.sources + export_cards.sources)
    page = from_folder.path.read_text()
    assert "noise step 500 (pixel space)" in page and "error types: object" in page


def test_the_same_pairs_are_shown_whatever_the_file_order(made, tmp_path):
    folder, _ = made
    build_export(tmp_path / "reversed", units=6, sources=("sharegpt4v", "llavar"), reverse=True)
    first = preview(folder, tmp_path / "a.html", per_group=2).path.read_text()
    again = preview(folder, tmp_path / "b.html", per_group=2).path.read_text()
    assert first == again
    keys = [c["key"] for c in cards_of(tmp_path / "a.html").cards]
    reordered = preview(tmp_path / "reversed" / "out", tmp_path / "c.html", per_group=2)
    assert [c["key"] for c in cards_of(reordered.path).cards] == keys
    everything = preview(folder, tmp_path / "d.html", per_group=10)
    assert everything.pairs_shown == 12  # fewer in a group than asked: all of them


def test_an_image_path_that_climbs_out_of_its_root_is_not_followed(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (8, 8), (250, 0, 0)).save(tmp_path / "secret.png")
    record = {
        "key": "llavar/1/0#inject",
        "source": "llavar",
        "negative_type": "inject",
        "image_path": "../secret.png",
        "image_root": str(root),
        "prompt": [{"role": "user", "content": "What is shown?"}],
        "chosen": "A red square.",
        "rejected": "A blue square.",
        "generator": "rules",
        "error_types": ["attribute"],
    }
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "pairs-00000-of-00001.jsonl").write_text(json.dumps(record) + "\n")
    page = preview(folder, tmp_path / "page.html").path.read_text()
    (card,) = cards_of(tmp_path / "page.html").cards
    assert card["image"] == "" and "data:image" not in page
    assert re.search(r"climbs out of the image root", page)


def test_inputs_that_are_not_pairs_are_refused_with_what_to_give(tmp_path):
    with pytest.raises(PreviewError, match="neither pairs-\\*.jsonl .* nor parquet files"):
        preview(tmp_path, tmp_path / "page.html")
    with pytest.raises(PreviewError, match="no such folder"):
        preview(tmp_path / "missing", tmp_path / "page.html")
    with pytest.raises(PreviewError, match="--per-group must be at least 1"):
        preview(tmp_path, tmp_path / "page.html", per_group=0)
    assert not (tmp_path / "page.html").exists()
