"""The WordNet tables shipped in bpo_data/resources are WordNet 3.0's, and the lemmatiser built on them
gives nltk's answers. Needs WordNet installed (Debian: `apt-get install wordnet-base`); skipped without.

Regenerate the tables after a WordNet change:
``python tests/unit/eval/test_wordnet_nouns.py /usr/share/wordnet``.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import warnings
from importlib.resources import files
from pathlib import Path

import pytest

from bpo_data.coco_objects import NOUN_EXCEPTIONS_FILE, NOUN_LEMMAS_FILE, coco_vocabulary, wordnet_nouns

WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET / "index.noun").is_file(), reason="WordNet not installed (apt-get install wordnet-base)"
)


def noun_tables(wordnet: Path) -> tuple[str, str]:
    """(the lemma list, noun.exc): index.noun's lemmas without '_' plus the multi-word lemmas that
    noun.exc maps to (nltk checks an exception's bases against the lemmas), and noun.exc itself."""
    lemmas = [
        line.split(" ", 1)[0]
        for line in (wordnet / "index.noun").read_text("utf-8").splitlines()
        if not line.startswith("  ")
    ]
    exceptions = (wordnet / "noun.exc").read_text("utf-8")
    bases = {base for line in exceptions.splitlines() for base in line.split()[1:]}
    keep = sorted({lemma for lemma in lemmas if "_" not in lemma} | (bases & set(lemmas)))
    return "\n".join(keep) + "\n", exceptions


@needs_wordnet
def test_shipped_tables_are_wordnet_30s():
    lemmas, exceptions = noun_tables(WORDNET)
    shipped = files("bpo_data").joinpath("resources")
    assert gzip.decompress(shipped.joinpath(NOUN_LEMMAS_FILE).read_bytes()).decode("utf-8") == lemmas, (
        f"bpo_data/resources/{NOUN_LEMMAS_FILE} is stale: run python {__file__} {WORDNET}"
    )
    assert shipped.joinpath(NOUN_EXCEPTIONS_FILE).read_text("utf-8") == exceptions


@pytest.fixture(scope="module")
def nltk_wordnet(tmp_path_factory):
    """nltk's own WordNet reader over the installed WordNet (nltk reads only below its data path)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = tmp_path_factory.mktemp("nltk_data")
    corpus = root / "corpora" / "wordnet"
    corpus.mkdir(parents=True)
    for path in WORDNET.iterdir():
        if path.name.startswith("index.") or path.suffix == ".exc" or path.name == "data.adj":
            shutil.copy(path, corpus / path.name)
    (corpus / "lexnames").write_text("00\tadj.all\t3\n01\tadj.pert\t3\n02\tadv.all\t4\n03\tnoun.Tops\t1\n")
    (corpus / "index.sense").write_text("")  # nltk maps sense keys for multilingual data; none here
    nltk.data.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield WordNetCorpusReader(str(corpus), None)
    finally:
        nltk.data.path.remove(str(root))


def surface_forms() -> set[str]:
    """Every vocabulary word and word of a two-word name, with the plural spellings a text may use,
    every inflected form of noun.exc, and every single-word WordNet noun with an -s added."""
    vocabulary = coco_vocabulary()
    words = {word for name in [*vocabulary.to_class, *vocabulary.double_words] for word in name.split()}
    inflected = {form + suffix for form in words for suffix in ("s", "es", "ses", "ies", "men", "ss")}
    inflected |= {form[:-1] + "ies" for form in words if form.endswith("y")}
    inflected |= {form[:-3] + "men" for form in words if form.endswith("man")}
    nouns = wordnet_nouns()
    return (
        words | inflected | set(nouns.exceptions) | {lemma + "s" for lemma in nouns.lemmas if lemma.isalpha()}
    )


@pytest.mark.slow  # nltk's reader takes ~10 s to load WordNet
@needs_wordnet
def test_lemmas_are_nltks(nltk_wordnet):
    """Where nltk (3.9+) finds a form, ours is its shortest; where it finds none, ours is the word,
    or what nltk 3.8.1 found by rewriting the rewrites (3.9+ dropped that step)."""
    nouns = wordnet_nouns()
    checked = 0
    for word in sorted(surface_forms()):
        found = nltk_wordnet._morphy(word, "n")
        ours = nouns.lemmatize(word)
        if found:
            assert ours == min(found, key=len), word
        elif ours != word:
            assert "n" in nltk_wordnet._lemma_pos_offset_map.get(ours, {}), word
        checked += 1
    assert checked > 50_000


if __name__ == "__main__":
    lemma_text, exception_text = noun_tables(Path(sys.argv[1]))
    resources = Path(__file__).resolve().parents[3] / "bpo_data" / "resources"
    (resources / NOUN_LEMMAS_FILE).write_bytes(gzip.compress(lemma_text.encode("utf-8"), 9, mtime=0))
    (resources / NOUN_EXCEPTIONS_FILE).write_text(exception_text, encoding="utf-8")
