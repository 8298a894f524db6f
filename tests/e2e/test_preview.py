"""The preview page in a real headless browser (Chromium from Debian's packages): it renders, shows the
expected number of pairs, and its filters work, set from the page's address as a user's shared link would.
The DOM is read after the page's script ran (``--dump-dom``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.trainer import build_export

from bpo_data.preview import preview

pytestmark = pytest.mark.slow  # one browser start per view, seconds each

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTICLE = re.compile(r"<article\b[^>]*>")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    if BROWSER is None:
        pytest.skip(
            "no Chromium here: install it with `apt-get install -y chromium` (Debian) to run this test"
        )
    base = tmp_path_factory.mktemp("preview-browser")
    build_export(base, units=6, sources=("sharegpt4v", "llavar"))
    return preview(base / "out", base / "page.html", per_group=2).path


def rendered(page: Path, fragment: str, profile: Path) -> str:
    """The DOM after load, as the browser has it (script run, filters applied)."""
    done = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def visible(dom: str) -> list[str]:
    """The opening tags of the pair cards the script left visible."""
    return [tag for tag in ARTICLE.findall(dom) if 'class="pair"' in tag and "hidden" not in tag]


def test_the_page_renders_every_pair_and_filters_from_its_address(page, tmp_path):
    everything = rendered(page, "", tmp_path / "profile")
    assert len(ARTICLE.findall(everything)) == 8 and len(visible(everything)) == 8
    assert '<span id="shown-count">8</span>' in everything
    assert everything.count('src="data:image/jpeg;base64,') == 8

    filtered = rendered(page, "#source=llavar&type=inject", tmp_path / "profile")
    shown = visible(filtered)
    assert len(shown) == 2 and all('data-source="llavar" data-type="inject"' in tag for tag in shown)
    assert len(ARTICLE.findall(filtered)) == 8  # the others are hidden, not removed
    assert '<span id="shown-count">2</span>' in filtered

    one_type = rendered(page, "#type=weaken", tmp_path / "profile")
    assert len(visible(one_type)) == 4 and '<span id="shown-count">4</span>' in one_type
