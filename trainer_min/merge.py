"""Fold a trained adapter into its base model: a plain LLaVA checkpoint that any LLaVA loader reads.

The merged directory holds the model, the processor, the run's ``training_config.json`` (with
``merged_from`` added) and a model card naming the base model and the data, so evaluation tools that know
nothing of PEFT get the trained model and its provenance.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer_min.card import write_model_card
from trainer_min.load import RUN_RECORD, base_model_of, load_for_eval


def merge_adapter(
    adapter_dir: str | Path, to: str | Path, model_id: str | None = None, dtype: str = "auto"
) -> Path:
    """Write base + adapter, merged, to ``to`` (which must be new or empty); return ``to``."""
    adapter_dir, to = Path(adapter_dir), Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise FileExistsError(f"{to} exists and is not an empty directory; merge into a new directory")
    merged, processor = load_for_eval(model_id, adapter_dir, dtype=dtype, device="cpu", merge=True)
    to.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(to)
    processor.save_pretrained(to)
    record_path = adapter_dir / RUN_RECORD
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    record["merged_from"] = {
        "adapter": str(adapter_dir.resolve()),
        "model": model_id or base_model_of(adapter_dir),
    }
    (to / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_model_card(to, {**record, "model": record["merged_from"]["model"]}, merged_from=str(adapter_dir))
    return to
