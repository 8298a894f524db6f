"""Figure 5 in miniature: how the world model's language prior shows as its view of the image is weakened.

For each noise step (DDPM forward process, ``bpo_data.weaken``) in pixel and in feature space the
model describes held-out **prior-violating** scenes (a pair's first object without its partner) and
two things are measured against the same scenes seen clean:

- **partner rate**: how often a description names the absent partner (a ball next to a dog that has
  none) — the prior talking, read with the CHAIR rules (``evaluate.prior_rates``); CHAIRi beside it;
- **KL**: ``KL(p_clean || p_noisy)`` of the next-token distributions over the first answer tokens,
  teacher-forced on the clean greedy answer, so every step is compared on the same text. Step 0 is
  the clean view itself, so its KL is exactly 0.

Noise goes through the pipeline's own code: each scene's draw is ``NoisyView(spec, noise_seed(id))``
as image weakening makes it, applied by the hf engine's ``viewed_pixels`` / ``viewed_features``.
The same draw (one seed per scene) is scaled by each step, so the curves move with the step alone.
If the prior does not grow with noise, the table says so (``verdict``) rather than hiding it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from bpo_data.recipe import NoiseSpec, SamplingParams
from bpo_data.weaken.negatives import noise_seed
from bpo_data.weaken.schedule import signal_weight
from bpo_data.weaken.view import NoisyView
from bpo_data.world import language
from bpo_data.world.evaluate import DESCRIPTION_TOKENS, chair, load_engine, prior_rates
from bpo_data.world.make import read_scenes, scene_image
from bpo_data.world.scenes import Scene

DEFAULT_STEPS = tuple(range(0, 1000, 100))
SPACES = ("pixel", "features")


class ProbeInputError(ValueError):
    """What the probe was given cannot be probed (no held-out scenes, an unknown noise space)."""


KL_TOKENS = 8  # answer positions compared: the prior shows first in what the answer starts to name
TABLE_FILE, JSON_FILE, FIGURE_FILE = "figure5.md", "figure5.json", "figure5.png"


@dataclass(frozen=True)
class Row:
    """One (space, step) condition of the probe."""

    space: str
    step: int
    signal: float  # sqrt(alpha_bar): the share of the clean image that survives
    partner_rate: float | None  # % of descriptions naming the absent partner
    chair_i: float | None
    kl: float  # nats, mean over scenes and the first answer positions


def probe(
    model_dir: str | Path,
    world_dir: str | Path,
    out_dir: str | Path,
    scenes: int = 40,
    steps: Sequence[int] = DEFAULT_STEPS,
    spaces: Sequence[str] = SPACES,
    seed: int = 0,
    batch_size: int = 32,
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure every (space, step) on the first ``scenes`` prior-violating scenes; write table, JSON, PNG.

    ``threads``: torch threads while probing (restored after). Decoding a tiny model is overhead-bound:
    one thread is as fast as two on an idle CPU and many times faster on a busy one.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _probe(model_dir, world_dir, out_dir, scenes, steps, spaces, seed, batch_size, log)
    finally:
        torch.set_num_threads(previous)


def _probe(
    model_dir: str | Path,
    world_dir: str | Path,
    out_dir: str | Path,
    scenes: int,
    steps: Sequence[int],
    spaces: Sequence[str],
    seed: int,
    batch_size: int,
    log: Callable[[str], None],
) -> dict:
    world, out = Path(world_dir), Path(out_dir)
    split = world / "eval_violating"
    chosen = read_scenes(split)[:scenes]
    if not chosen:
        raise ProbeInputError(
            f"{split} holds no scenes; make the world with `bpo-data world make --out {world}`"
        )
    unknown = sorted(set(spaces) - set(SPACES))
    if unknown:
        raise ProbeInputError(f"unknown noise space {unknown}; use pixel and/or features")
    engine = load_engine(model_dir)
    runtime = engine.runtime
    images = [_open(scene_image(split, s)) for s in chosen]
    seeds = [noise_seed(s.id, seed) for s in chosen]
    answers = _clean_answer_ids(runtime, images, batch_size)
    clean_logp = _answer_logprobs(runtime, images, answers, [None] * len(images), batch_size)
    rows: list[Row] = []
    examples: dict[str, str] = {}
    clean: tuple[list[str], float] | None = None  # step 0 is the same clean view in every space
    for space in spaces:
        for step in sorted(set(steps)):
            spec = NoiseSpec(step=step, space=space)
            if step == 0 and clean is not None:
                texts, kl = clean
            else:
                views = [NoisyView(spec, s) for s in seeds]
                texts = _describe(engine, images, views, batch_size)
                kl = _mean_kl(
                    clean_logp, _answer_logprobs(runtime, images, answers, views, batch_size), answers
                )
                if step == 0:
                    clean = texts, kl
            row = Row(
                space,
                step,
                signal_weight(spec),
                prior_rates(chosen, texts, [], [])["partner_named_violating"],
                chair(chosen, texts)["chair_i"],
                kl,
            )
            rows.append(row)
            examples[f"{space}/{step}"] = texts[0]
            log(
                f"{space:8s} step {step:3d}  partner {_pct(row.partner_rate)}  CHAIRi {_pct(row.chair_i)}  "
                f"KL {row.kl:.4f}"
            )
    report = {
        "model": str(model_dir),
        "world": str(world),
        "scenes": [s.id for s in chosen],
        "seed": seed,
        "kl_tokens": KL_TOKENS,
        "rows": [row.__dict__ for row in rows],
        "verdict": verdict(rows),
        "example_scene": _scene_words(chosen[0]),
        "example_descriptions": examples,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / TABLE_FILE).write_text(format_table(rows, report["verdict"]) + "\n", encoding="utf-8")
    plot(rows, out / FIGURE_FILE)
    return report


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": language.EVAL_DESCRIBE_PROMPT}]


def _describe(engine, images: list[Image.Image], views: list[NoisyView], batch_size: int) -> list[str]:
    """Greedy descriptions through the hf engine, each image seen through its view (as weakening does)."""
    from bpo_data.engines.base import VisionRequest

    sampling = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=DESCRIPTION_TOKENS)
    texts: list[str] = []
    for start in range(0, len(images), batch_size):
        requests = [
            VisionRequest(image=image, messages=_messages(), sampling=sampling, view=view)
            for image, view in zip(images[start : start + batch_size], views[start : start + batch_size])
        ]
        for result in engine.generate(requests):
            if result.error:
                raise RuntimeError(f"the engine failed while probing: {result.error}")
            texts.append(result.text or "")
    return texts


def _inputs(runtime, images: list[Image.Image]) -> dict:
    from bpo_data.prompting import llava_prompt

    prompt = llava_prompt(_messages())
    return runtime.processor(
        images=images, text=[prompt] * len(images), padding=True, return_tensors="pt"
    ).to(runtime.device)


def _clean_answer_ids(runtime, images: list[Image.Image], batch_size: int) -> list[list[int]]:
    """The first ``KL_TOKENS`` token ids of each clean greedy answer (shorter where it ends sooner)."""
    answers: list[list[int]] = []
    eos = runtime.tokenizer.eos_token_id
    for start in range(0, len(images), batch_size):
        inputs = _inputs(runtime, images[start : start + batch_size])
        with torch.inference_mode():
            out = runtime.model.generate(
                **inputs,
                max_new_tokens=KL_TOKENS,
                do_sample=False,
                pad_token_id=runtime.tokenizer.pad_token_id,
            )
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            ids = []
            for token in row:
                ids.append(token)
                if token == eos:
                    break
            answers.append(ids)
    return answers


def _answer_logprobs(
    runtime, images: list[Image.Image], answers: list[list[int]], views: list, batch_size: int
) -> list[torch.Tensor]:
    """Per scene, log p(. | image seen through its view, prompt, answer[:i]) for each answer position i."""
    from bpo_data.engines.hf import projector_of, viewed_features, viewed_pixels

    out: list[torch.Tensor] = []
    pad = runtime.tokenizer.pad_token_id
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        inputs = _inputs(runtime, images[batch])
        chunk, chunk_views = answers[batch], views[batch]
        width = max(len(a) for a in chunk)
        # the prompt is left-padded; answers are right-padded after it (masked, never read back)
        tail = torch.tensor([a + [pad] * (width - len(a)) for a in chunk], device=runtime.device)
        tail_mask = torch.tensor(
            [[1] * len(a) + [0] * (width - len(a)) for a in chunk], device=runtime.device
        )
        prompt_len = inputs["input_ids"].shape[1]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], tail], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], tail_mask], dim=1)
        inputs["pixel_values"] = viewed_pixels(inputs["pixel_values"].to(runtime.model.dtype), chunk_views)
        with torch.inference_mode(), viewed_features(projector_of(runtime.model), chunk_views):
            logits = runtime.model(**inputs).logits
        scores = torch.log_softmax(logits[:, prompt_len - 1 : prompt_len - 1 + width].float(), dim=-1)
        out.extend(row[: len(a)].cpu() for row, a in zip(scores, chunk))
    return out


def _mean_kl(clean: list[torch.Tensor], noisy: list[torch.Tensor], answers: list[list[int]]) -> float:
    """KL(clean || noisy) per answer position, averaged over positions, then over scenes."""
    per_scene = [float((c.exp() * (c - n)).sum(dim=-1).mean()) for c, n, a in zip(clean, noisy, answers) if a]
    return sum(per_scene) / len(per_scene) if per_scene else 0.0


def verdict(rows: Sequence[Row]) -> dict[str, str]:
    """Per space, whether the prior grew with noise: the partner rate at the largest step against step 0."""
    said = {}
    for space in sorted({r.space for r in rows}):
        ordered = sorted((r for r in rows if r.space == space), key=lambda r: r.step)
        first, last = ordered[0], ordered[-1]
        if first.partner_rate is None or last.partner_rate is None or len(ordered) < 2:
            said[space] = "not measurable (no prior-violating scene with a pair)"
            continue
        change = last.partner_rate - first.partner_rate
        trend = "grew" if change > 0 else "did not grow"
        said[space] = (
            f"the prior {trend} with noise: absent partner named in {first.partner_rate:.1f}% at step "
            f"{first.step}, {last.partner_rate:.1f}% at step {last.step} ({change:+.1f} points); "
            f"KL {first.kl:.3f} -> {last.kl:.3f}"
        )
    return said


def format_table(rows: Sequence[Row], said: dict[str, str]) -> str:
    lines = [
        "| space | step | signal √ᾱ | absent partner named | CHAIRi | KL (nats) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = (r.space, r.step, f"{r.signal:.3f}", _pct(r.partner_rate), _pct(r.chair_i), f"{r.kl:.4f}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", *(f"- {space}: {text}" for space, text in said.items())]
    return "\n".join(lines)


def plot(rows: Sequence[Row], to: Path) -> Path:
    """Two panels: partner rate and KL against the noise step, one line per space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for space in sorted({r.space for r in rows}):
        ordered = sorted((r for r in rows if r.space == space), key=lambda r: r.step)
        steps = [r.step for r in ordered]
        left.plot(steps, [r.partner_rate or 0.0 for r in ordered], marker="o", label=space)
        right.plot(steps, [r.kl for r in ordered], marker="o", label=space)
    left.set(xlabel="noise step", ylabel="absent partner named (%)", title="the prior shows")
    right.set(xlabel="noise step", ylabel="KL(clean || noisy), nats", title="first answer tokens")
    for axis in (left, right):
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(to, dpi=120)
    plt.close(fig)
    return to


def _scene_words(scene: Scene) -> str:
    return ", ".join(f"{o.count} {o.colour} {o.cls}" for o in scene.objects)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"
