"""Image–text similarity with open-clip: how well each answer of a pair matches its image.

**Which model.** ``load_scorer(model, pretrained)`` takes what open-clip takes: a model name with a
pretrained tag (``ViT-B-32`` + ``laion2b_s34b_b79k``, the default: open-clip's most used checkpoint),
``hf-hub:org/repo``, a local folder in open-clip's layout (``open_clip_config.json`` and weights), or
``world``, the verifier trained on the miniature world that ships in ``bpo_data/verify/world_clip``.
The id recorded with every score (``clip_model``) names the model and tag, or a local folder's name
and a digest of its weights, never a path of this machine.

**CLIP reads 77 tokens.** Long answers (ShareGPT4V captions run to hundreds of words) are scored
sentence by sentence and the cosines averaged: each sentence makes a claim about the image, and one
wrong sentence among ten lowers the mean by a tenth of its drop, while truncating at 77 tokens
would ignore everything after the first few sentences. Short answers ("Red.", "It is large.") say
nothing without their question, so an answer of at most ``SHORT_ANSWER_WORDS`` words is scored as
the question and the answer together. A single sentence beyond the context is cut by the tokenizer.

**Negation.** CLIP models read "there is no cup" much as "cup": they do not read negation. An
answer whose every sentence denies something ("No, I cannot see a cup.") is therefore not scored
when the other answer only denies things too: "no cup" against "no bed" carries no evidence CLIP
can give, and such a pair gets no CLIP scores (``None``), which a CLIP threshold drops as unmeasured.
Where one answer affirms ("Yes, a red cup is on the left."), both are scored.

**Batched.** Sentences are encoded once per batch whatever the number of answers they occur in (an
injected rewrite repeats all but one sentence of the chosen answer; a unit's chosen answer is in
every pair made of it), and kept in a bounded cache across batches; images likewise per batch.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from PIL import Image

from bpo_data.verify.objects import NEGATION, SENTENCES

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
WORLD = "world"
SHORT_ANSWER_WORDS = 8


class VerifierUnavailable(RuntimeError):
    """The open-clip model cannot be loaded here; the message says what to pass instead."""


@dataclass(frozen=True)
class ScoreRequest:
    """One pair to score: its image (``image_key`` names it, so pairs of one unit share it) and texts."""

    image: Image.Image
    image_key: str
    question: str
    chosen: str
    rejected: str


def segments(answer: str, question: str = "") -> list[str]:
    """The texts an answer is scored as (see the module docstring): its sentences, or Q + A when short."""
    answer = answer.strip()
    if len(answer.split()) <= SHORT_ANSWER_WORDS:
        return [f"{question.strip()} {answer}".strip() or answer]
    return [piece.strip() for piece in SENTENCES.split(answer) if piece.strip()]


def only_denies(answer: str) -> bool:
    """Whether every sentence of an answer holds a negation (what CLIP cannot read; see above)."""
    sentences = [piece for piece in SENTENCES.split(answer.strip()) if piece.strip()]
    return bool(sentences) and all(NEGATION.search(sentence) for sentence in sentences)


def world_verifier_dir() -> Path:
    """The shipped world verifier's folder (inside the installed package; no network)."""
    return Path(str(files("bpo_data.verify").joinpath("world_clip")))


class ClipScorer:
    """Mean sentence cosine of each answer with its image, for batches of pairs."""

    def __init__(
        self, model, preprocess, tokenizer, model_id: str, device: str = "cpu", cache_size: int = 1 << 16
    ):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.cache_size = cache_size
        self._text_cache: OrderedDict[str, object] = OrderedDict()

    def score(
        self, requests: Sequence[ScoreRequest], batch_size: int = 256
    ) -> list[tuple[float, float] | None]:
        """(clip_chosen, clip_rejected) of each request, in order; None where both answers only deny."""
        import torch

        if not requests:
            return []
        with torch.inference_mode():
            images = self._images(requests, batch_size)
            pieces = [
                None
                if only_denies(r.chosen) and only_denies(r.rejected)
                else (segments(r.chosen, r.question), segments(r.rejected, r.question))
                for r in requests
            ]
            texts = self._texts({s for pair in pieces if pair for side in pair for s in side}, batch_size)
            out: list[tuple[float, float] | None] = []
            for request, pair in zip(requests, pieces):
                image = images[request.image_key]
                out.append(pair and (self._mean(image, pair[0], texts), self._mean(image, pair[1], texts)))
        return out

    def _mean(self, image, pieces: list[str], texts: dict) -> float:
        import torch

        if not pieces:
            return math.nan
        return float(torch.stack([texts[p] for p in pieces]).matmul(image).mean())

    def _images(self, requests: Sequence[ScoreRequest], batch_size: int) -> dict:
        import torch

        unique = {r.image_key: r.image for r in requests}
        keys = list(unique)
        out = {}
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            pixels = torch.stack([self.preprocess(unique[k].convert("RGB")) for k in chunk]).to(self.device)
            encoded = self.model.encode_image(pixels, normalize=True).float().cpu()
            out.update(zip(chunk, encoded))
        return out

    def _texts(self, wanted: set[str], batch_size: int) -> dict:
        missing = sorted(t for t in wanted if t not in self._text_cache)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            tokens = self.tokenizer(chunk).to(self.device)
            encoded = self.model.encode_text(tokens, normalize=True).float().cpu()
            for text, vector in zip(chunk, encoded):
                self._text_cache[text] = vector
        out = {}
        for text in wanted:
            out[text] = self._text_cache[text]
            self._text_cache.move_to_end(text)
        while len(self._text_cache) > self.cache_size:
            self._text_cache.popitem(last=False)
        return out


def _digest(folder: Path) -> str:
    """A short digest of a local model's weights, so the recorded id changes when they do."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".pth", ".json") and path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def resolve(model: str, pretrained: str | None) -> tuple[str, str | None, str]:
    """(open-clip model name, pretrained tag, recorded id) for what a user passed."""
    if model == WORLD:
        folder = world_verifier_dir()
        if not (folder / "open_clip_config.json").is_file():
            raise VerifierUnavailable(
                f"the world verifier is missing from {folder}; reinstall bpo-data, or rebuild it with "
                "`bpo-data verify train-world --out bpo_data/verify/world_clip` in a source checkout"
            )
        return f"local-dir:{folder}", None, f"world-clip@{_digest(folder)}"
    if Path(model).is_dir():
        folder = Path(model)
        return f"local-dir:{folder}", None, f"local:{folder.resolve().name}@{_digest(folder)}"
    if model.startswith(("hf-hub:", "local-dir:")):
        return model, None, model if model.startswith("hf-hub:") else f"local:{Path(model[10:]).name}"
    return model, pretrained, f"open_clip:{model}/{pretrained}" if pretrained else f"open_clip:{model}"


def load_scorer(
    model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, device: str = "cpu"
) -> ClipScorer:
    """An open-clip scorer for ``model`` (see the module docstring for what it may be)."""
    try:
        import open_clip
    except ImportError as err:
        raise VerifierUnavailable(
            "verification needs open-clip-torch: pip install 'bpo-data[verify]'"
        ) from err
    name, tag, model_id = resolve(model, pretrained)
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, OSError, ValueError) as err:
        raise VerifierUnavailable(
            f"cannot load the open-clip model {model_id} ({type(err).__name__}: {str(err)[:300]}). Without "
            "network access, pass a local folder in open-clip's layout (open_clip_config.json + weights), "
            "a pretrained file path with --clip-pretrained, or --clip-model world for the miniature-world "
            "verifier that ships with bpo-data"
        ) from err
    return ClipScorer(clip, preprocess, tokenizer, model_id, device)
