"""The model card (``README.md``) of a trained adapter and of a merged model.

TRL's own card names the base model only when it is a Hub id (else "a fine-tuned version of [None]"),
calls a LLaVA ``text-generation`` and does not name the data; merging wrote none. This card is written from
the run's ``training_config.json``: the base model, the dataset (id or folder, export version, rows), the
objective and its main settings, ``pipeline_tag: image-text-to-text``, and how to load the result. The Hub
metadata (``base_model``, ``datasets``) only carries Hub ids: a local path would be refused there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer_min.data import HUB_ID

CARD_FILE = "README.md"
PAPER = "https://arxiv.org/abs/2403.08730"
OBJECTIVES = {
    "dpo": "LoRA DPO on bootstrapped preference pairs (Bootstrapped Preference Optimization, BPO)",
    "sft": "LoRA SFT on the ground-truth answers only (the SFT baseline of the BPO paper, Table 3)",
}


def is_hub_id(name: str | None) -> bool:
    """A ``namespace/name`` that is no folder here: what the Hub's metadata fields accept."""
    return bool(name) and HUB_ID.fullmatch(name) is not None and "/" in name and not Path(name).exists()


def write_model_card(out_dir: str | Path, record: dict[str, Any], merged_from: str | None = None) -> Path:
    """Write ``out_dir/README.md`` for the run described by ``record`` (its training_config.json);
    ``merged_from`` names the adapter folder when ``out_dir`` holds the merged model."""
    from huggingface_hub import ModelCard, ModelCardData

    out_dir = Path(out_dir)
    base = record.get("model") or "unknown"
    data = record.get("data") or {}
    dataset = data.get("dataset") or "unknown"
    objective = record.get("objective", "dpo")
    tags = ["bpo", "bpo-data", objective, "lora", "trl", "llava", "image-text-to-text"]
    if merged_from is None and is_hub_id(base):
        tags.append(f"base_model:adapter:{base}")
    metadata = ModelCardData(
        base_model=base if is_hub_id(base) else None,
        datasets=[dataset] if is_hub_id(dataset) else None,
        library_name="transformers" if merged_from else "peft",
        pipeline_tag="image-text-to-text",
        tags=tags,
    )
    name = out_dir.name
    what = (
        f"A LLaVA checkpoint: `{base}` with the LoRA adapter `{Path(merged_from).name}` folded into its "
        "weights (a plain `LlavaForConditionalGeneration`, no PEFT needed)."
        if merged_from
        else f"A LoRA adapter (with the trained multimodal projector) for `{base}`."
    )
    lines = [
        f"# {name}",
        "",
        what,
        "",
        f"- **Base model:** `{base}`",
        f"- **Dataset:** `{dataset}`" + _dataset_details(data),
        f"- **Training:** {OBJECTIVES.get(objective, objective)}, with "
        "[TRL](https://github.com/huggingface/trl) and bpo-data's `trainer_min`" + _settings(record),
        "",
        "BPO here is *Bootstrapped Preference Optimization* (Pi et al., ECCV 2024,",
        f"[arXiv:2403.08730]({PAPER})): preference pairs whose rejected answers the model itself",
        "produced from a weakened image or with injected errors. It is not another method also called BPO.",
        "",
        "## Use",
        "",
        "```python",
        *(_merged_usage(name) if merged_from else _adapter_usage(base, name)),
        "```",
        "",
        "`training_config.json` next to the weights holds every setting, the exact data (SHA-256 of the pair",
        "ids) and the software versions of the run.",
    ]
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    path = out_dir / CARD_FILE
    card.save(path)
    return path


def _dataset_details(data: dict[str, Any]) -> str:
    parts = []
    if data.get("version"):
        parts.append(f"export {data['version']}")
    if data.get("revision"):
        parts.append(f"revision {data['revision']}")
    if data.get("rows") is not None:
        parts.append(f"{data['rows']} rows of split `{data.get('split', 'train')}`")
    return f" ({', '.join(parts)})" if parts else ""


def _settings(record: dict[str, Any]) -> str:
    args = record.get("training_arguments") or {}
    lora = record.get("lora") or {}
    resolved = record.get("resolved") or {}
    shown = [
        ("steps", record.get("global_step")),
        ("learning rate", args.get("learning_rate")),
        ("beta", args.get("beta") if record.get("objective") == "dpo" else None),
        ("effective batch", resolved.get("effective_batch_size")),
        ("LoRA r", lora.get("r")),
        ("alpha", lora.get("alpha")),
    ]
    text = ", ".join(f"{label} {value}" for label, value in shown if value is not None)
    return f" ({text})." if text else "."


def _adapter_usage(base: str, name: str) -> list[str]:
    return [
        "from trainer_min import load_for_eval  # pip install 'bpo-data[eval]'",
        "",
        f'model, processor = load_for_eval(None, "{name}")  # the base is read from the adapter\'s files',
        "# or, with PEFT alone:",
        "from peft import PeftModel",
        "from transformers import AutoProcessor, LlavaForConditionalGeneration",
        "",
        f'base = LlavaForConditionalGeneration.from_pretrained("{base}")',
        f'model = PeftModel.from_pretrained(base, "{name}")',
        f'processor = AutoProcessor.from_pretrained("{name}")',
    ]


def _merged_usage(name: str) -> list[str]:
    return [
        "from transformers import AutoProcessor, LlavaForConditionalGeneration",
        "",
        f'model = LlavaForConditionalGeneration.from_pretrained("{name}")',
        f'processor = AutoProcessor.from_pretrained("{name}")',
    ]
