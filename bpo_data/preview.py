"""A page to look at pairs before training on them, or before spending GPU-days making more.

``preview(folder, "page.html", per_group=3)`` reads a generation folder (its ``pairs-*.jsonl``, images
from each pair's ``image_root``) or an exported dataset folder (its parquet files, images embedded) and
writes one static HTML file: no server, no external asset, images inlined as downscaled JPEG data URIs,
so it can be mailed or opened from a laptop. For every source × negative type it shows ``per_group``
pairs (the ones with the smallest stable hash of their key: the same pairs on every run, spread over
the whole input rather than its first lines), each with its image, the prompt, the chosen and the
rejected answer side by side with the words that differ highlighted, and what made the rejected one
(the noise step for an image-weakened answer, the error types for an injected one). A small inline
script filters by source and negative type; the filter is kept in the page's address
(``page.html#source=llavar&type=inject``), so a filtered view can be shared.
"""

from __future__ import annotations

import base64
import difflib
import heapq
import html
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from bpo_data.hashing import stable_u64
from bpo_data.images import ImageError, safe_image_path
from bpo_data.jsonl import iter_jsonl
from bpo_data.recipe import DEFAULT_MAX_PIXELS

THUMBNAIL_SIDE = 384  # pixels: enough to judge an answer, small enough for a page of dozens of pairs
_PURPOSE = "preview"
_WORDS = re.compile(r"\S+|\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class PreviewError(ValueError):
    """The input is neither a generation folder nor an exported dataset; the message says what to give."""


@dataclass
class PreviewPair:
    """One pair as the page shows it."""

    key: str
    source: str
    negative_type: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    generator: str = ""
    noise_step: int | None = None
    noise_space: str | None = None
    error_types: list[str] = field(default_factory=list)
    image: str | None = None  # a data: URI
    image_note: str = ""  # why there is no image, or where it came from


@dataclass
class Preview:
    """What was written: the page, and per (source, negative type) the pairs shown and in the input."""

    path: Path
    shown: dict[tuple[str, str], int]
    total: dict[tuple[str, str], int]

    @property
    def pairs_shown(self) -> int:
        return sum(self.shown.values())


def preview(folder_or_export: str | Path, out_html: str | Path, per_group: int = 3, seed: int = 0) -> Preview:
    """Write the preview page of a generation folder or an exported dataset folder; see the module doc."""
    if per_group < 1:
        raise PreviewError(f"--per-group must be at least 1, got {per_group}")
    source = Path(folder_or_export)
    if not source.is_dir():
        raise PreviewError(f"{source}: no such folder; give a generation --out folder or an export folder")
    if sorted(source.glob("pairs-*.jsonl")):
        pairs, total = _from_generation_folder(source, per_group, seed)
    elif _parquet_files(source):
        pairs, total = _from_export(source, per_group, seed)
    else:
        raise PreviewError(
            f"{source} holds neither pairs-*.jsonl (a `bpo-data generate --out` folder) nor parquet files "
            "(a `bpo-data export` folder); give one of those"
        )
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(pairs, total, title=f"bpo-data preview: {source.name}"), encoding="utf-8")
    shown = Counter((p.source, p.negative_type) for p in pairs)
    return Preview(out, dict(shown), dict(total))


def _pick(
    records: Iterable[tuple[str, str, str, Any]], per_group: int, seed: int
) -> tuple[list[Any], Counter]:
    """The ``per_group`` items with the smallest stable hash of their key in each (source, type) group,
    from (key, source, negative_type, item) tuples read once; and how many each group had."""
    kept: dict[tuple[str, str], list[tuple[int, str, Any]]] = {}
    total: Counter = Counter()
    for key, source, negative_type, item in records:
        group = (source, negative_type)
        total[group] += 1
        heap = kept.setdefault(group, [])
        entry = (-stable_u64(key, seed, _PURPOSE), key, item)  # a max-heap of the smallest hashes
        if len(heap) < per_group:
            heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:
            heapq.heapreplace(heap, entry)
    chosen = [
        item for group in sorted(kept) for _, _, item in sorted(kept[group], key=lambda e: (-e[0], e[1]))
    ]
    return chosen, total


def _from_generation_folder(folder: Path, per_group: int, seed: int) -> tuple[list[PreviewPair], Counter]:
    def records() -> Iterator[tuple[str, str, str, dict]]:
        for path in sorted(folder.glob("pairs-*.jsonl")):
            for record in iter_jsonl(path):
                if isinstance(record.get("key"), str):
                    yield record["key"], str(record.get("source")), str(record.get("negative_type")), record

    picked, total = _pick(records(), per_group, seed)
    pairs = []
    for record in picked:
        pair = _pair(record, record.get("chosen"), record.get("rejected"), record["key"])
        root, rel = record.get("image_root") or "", record.get("image_path") or ""
        try:
            pair.image = _data_uri(safe_image_path(root, rel).read_bytes())
        except ImageError as err:
            pair.image_note = err.detail
        except (OSError, ValueError) as err:
            pair.image_note = f"{rel}: cannot show the image ({err})"
        pairs.append(pair)
    return pairs, total


def _parquet_files(folder: Path) -> list[str]:
    """An export's parquet files: ``data/*.parquet`` as `bpo-data export` writes them, or beside the card."""
    return sorted(str(path) for pattern in ("data/*.parquet", "*.parquet") for path in folder.glob(pattern))


def _from_export(folder: Path, per_group: int, seed: int) -> tuple[list[PreviewPair], Counter]:
    """Two passes with pyarrow: the id and group columns of every row group, then the picked rows' row
    groups in full. (``datasets.load_dataset`` would first copy the whole export, images and all, into
    its cache: too much for a look at a few pairs.)"""
    import pyarrow.parquet as pq

    files = [pq.ParquetFile(path) for path in _parquet_files(folder)]
    needed = {"prompt", "chosen", "rejected", "source", "negative_type"}
    for file in files:
        missing = needed - set(file.schema_arrow.names)
        if missing:
            raise PreviewError(
                f"{file.metadata} lacks the columns {sorted(missing)}: give a folder `bpo-data export` wrote"
            )

    def rows() -> Iterator[tuple[str, str, str, tuple[int, int, int]]]:
        for f, file in enumerate(files):
            has_id = "id" in file.schema_arrow.names
            for g in range(file.num_row_groups):
                columns = ["id", "source", "negative_type"] if has_id else ["source", "negative_type"]
                table = file.read_row_group(g, columns=columns).to_pydict()
                for r, (source, kind) in enumerate(zip(table["source"], table["negative_type"])):
                    key = table["id"][r] if has_id else f"{f}/{g}/{r}"
                    yield key, str(source), str(kind), (f, g, r)

    picked, total = _pick(rows(), per_group, seed)
    by_group: dict[tuple[int, int], list[dict]] = {}
    pairs = []
    for f, g, r in picked:
        if (f, g) not in by_group:
            by_group[(f, g)] = files[f].read_row_group(g).to_pylist()
        row = by_group[(f, g)][r]
        pair = _pair(row, row["chosen"], row["rejected"], row.get("id") or f"{f}/{g}/{r}")
        images = row.get("images") or []
        if images and images[0].get("bytes"):
            try:
                pair.image = _data_uri(images[0]["bytes"])
            except (OSError, ValueError) as err:
                pair.image_note = f"cannot show the image ({err})"
        else:
            pair.image_note = "no image in this row"
        pairs.append(pair)
    return pairs, total


def _pair(record: dict[str, Any], chosen: Any, rejected: Any, key: str) -> PreviewPair:
    """A PreviewPair from a shard record or an export row (answers as strings or as message lists)."""
    prompt = [
        {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
        for m in record.get("prompt") or []
        if isinstance(m, dict)
    ]
    return PreviewPair(
        key=key,
        source=str(record.get("source")),
        negative_type=str(record.get("negative_type")),
        prompt=prompt,
        chosen=_text(chosen),
        rejected=_text(rejected),
        generator=str(record.get("generator") or ""),
        noise_step=record.get("noise_step"),
        noise_space=record.get("noise_space"),
        error_types=list(record.get("error_types") or []),
    )


def _text(answer: Any) -> str:
    if isinstance(answer, list):
        return "\n".join(str(m.get("content", "")) for m in answer if isinstance(m, dict))
    return "" if answer is None else str(answer)


def _data_uri(data: bytes) -> str:
    """A downscaled JPEG of the image as a data URI; the pixel limit of generation applies first."""
    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > DEFAULT_MAX_PIXELS:
            raise ValueError(
                f"{image.width}x{image.height} pixels is more than the limit of {DEFAULT_MAX_PIXELS}"
            )
        image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # JPEG: decode at a reduced scale
        shown = ImageOps.exif_transpose(image).convert("RGB")
    shown.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    shown.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def word_diff(chosen: str, rejected: str) -> tuple[str, str]:
    """Both answers as HTML: words only in the chosen one in ``<del>``, only in the rejected in ``<ins>``."""
    a, b = _WORDS.findall(_clean(chosen)), _WORDS.findall(_clean(rejected))
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old, new = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f"<del>{old}</del>")
        if new:
            right.append(f"<ins>{new}</ins>")
    return "".join(left), "".join(right)


def _clean(text: str) -> str:
    """Control characters (a weakened model's noise may hold some) shown as the replacement character."""
    return _CONTROL.sub("\ufffd", text)


def render(pairs: list[PreviewPair], total: dict[tuple[str, str], int], title: str) -> str:
    """The whole page: summary table, filters, one card per pair, the inline style and script."""
    groups = sorted(total)
    sources = sorted({s for s, _ in groups})
    types = sorted({t for _, t in groups})
    shown = Counter((p.source, p.negative_type) for p in pairs)
    rows = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{html.escape(t)}</td>"
        f"<td>{shown[(s, t)]}</td><td>{total[(s, t)]}</td></tr>"
        for s, t in groups
    )
    cards = "\n".join(_card(pair) for pair in pairs)
    return _PAGE.format(
        title=html.escape(title),
        summary=rows,
        source_options=_options(sources),
        type_options=_options(types),
        total_shown=len(pairs),
        total_pairs=sum(total.values()),
        cards=cards,
        style=_STYLE,
        script=_SCRIPT,
    )


def _options(values: list[str]) -> str:
    return "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)


def _card(pair: PreviewPair) -> str:
    chosen, rejected = word_diff(pair.chosen, pair.rejected)
    made = [f"generator {html.escape(pair.generator)}"] if pair.generator else []
    if pair.noise_step is not None:
        space = f" ({html.escape(str(pair.noise_space))} space)" if pair.noise_space else ""
        made.append(f"noise step {int(pair.noise_step)}{space}")
    if pair.error_types:
        made.append("error types: " + ", ".join(html.escape(str(e)) for e in pair.error_types))
    image = (
        f'<img src="{pair.image}" alt="image of {html.escape(pair.key)}">'
        if pair.image
        else f'<div class="noimage">{html.escape(pair.image_note or "no image")}</div>'
    )
    *context, question = pair.prompt or [{"role": "user", "content": ""}]
    earlier = ""
    if context:
        turns = "".join(
            f"<p><b>{html.escape(m['role'])}:</b> {html.escape(_clean(m['content']))}</p>" for m in context
        )
        earlier = f"<details><summary>{len(context)} earlier messages</summary>{turns}</details>"
    return (
        f'<article class="pair" data-source="{html.escape(pair.source, quote=True)}" '
        f'data-type="{html.escape(pair.negative_type, quote=True)}">'
        f'<header><span class="tag">{html.escape(pair.source)}</span> '
        f'<span class="tag {html.escape(pair.negative_type)}">{html.escape(pair.negative_type)}</span> '
        f'<code>{html.escape(pair.key)}</code><span class="made">{" · ".join(made)}</span></header>'
        f'<div class="body"><div class="image">{image}</div><div class="texts">{earlier}'
        f'<p class="question"><b>{html.escape(question["role"])}:</b> '
        f"{html.escape(_clean(question['content']))}</p>"
        f'<div class="answers"><section class="chosen"><h3>chosen</h3><p>{chosen}</p></section>'
        f'<section class="rejected"><h3>rejected</h3><p>{rejected}</p></section></div></div></div></article>'
    )


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
.filters { position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #ddd; }
.pair { border: 1px solid #ccc; border-radius: 6px; margin: 1em 0; padding: .6em; }
.pair header { margin-bottom: .4em; } .made { color: #555; margin-left: .8em; }
.tag { background: #eee; border-radius: 4px; padding: 0 6px; } .tag.weaken { background: #dbe9ff; }
.tag.inject { background: #ffe3c8; }
.body { display: flex; gap: 1em; } .image img { max-width: 320px; border-radius: 4px; }
.noimage { width: 320px; color: #a00; } .texts { flex: 1; }
.answers { display: flex; gap: 1em; } .answers section { flex: 1; white-space: pre-wrap; }
.answers h3 { margin: 0; font-size: 13px; text-transform: uppercase; color: #555; }
del { background: #c8f0c8; text-decoration: none; } ins { background: #ffc8c8; text-decoration: none; }
"""

# Reads "#source=X&type=Y" into the filters, writes the filters back there, hides the other pairs.
_SCRIPT = """
(function () {
  var source = document.getElementById("filter-source"), type = document.getElementById("filter-type");
  var cards = document.querySelectorAll("article.pair"), count = document.getElementById("shown-count");
  function fromHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    source.value = params.get("source") || ""; type.value = params.get("type") || "";
    if (source.selectedIndex < 0) source.value = "";
    if (type.selectedIndex < 0) type.value = "";
  }
  function apply() {
    var shown = 0;
    cards.forEach(function (card) {
      var keep = (!source.value || card.dataset.source === source.value) &&
                 (!type.value || card.dataset.type === type.value);
      card.hidden = !keep; if (keep) shown++;
    });
    count.textContent = String(shown);
  }
  function changed() {
    var params = new URLSearchParams();
    if (source.value) params.set("source", source.value);
    if (type.value) params.set("type", type.value);
    history.replaceState(null, "", "#" + params.toString()); apply();
  }
  source.addEventListener("change", changed); type.addEventListener("change", changed);
  window.addEventListener("hashchange", function () { fromHash(); apply(); });
  fromHash(); apply();
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{style}</style></head>
<body><h1>{title}</h1>
<p>{total_shown} of {total_pairs} pairs, the same ones on every run (smallest stable hash of the key per
source and negative type). Words only in the chosen answer are <del>green</del>, words only in the
rejected answer <ins>red</ins>.</p>
<table><tr><th>source</th><th>negative type</th><th>shown</th><th>pairs</th></tr>{summary}</table>
<div class="filters">source <select id="filter-source"><option value="">all</option>{source_options}</select>
negative type <select id="filter-type"><option value="">all</option>{type_options}</select>
showing <span id="shown-count">{total_shown}</span> pairs</div>
<main>
{cards}
</main>
<script>{script}</script>
</body></html>
"""
