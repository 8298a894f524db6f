"""Compact LoRA DPO (BPO) and SFT on LLaVA-1.5 with stock TRL + PEFT, trained on a bpo-data export.

Python API: ``trainer_min.dpo.train`` / ``trainer_min.sft.train`` (or their ``main(argv)``) with TRL's own
configs carrying the paper's defaults (``trainer_min.config``: ``BPOScriptArguments``, ``BPODPOConfig``,
``BPOSFTConfig``, ``BPOModelConfig``), ``merge_adapter`` (``trainer_min.merge``), ``plot_runs``
(``trainer_min.plot``) and ``load_for_eval`` for evaluation code. TRL and transformers load on first use, so
importing the package is cheap.
"""

from trainer_min.load import load_for_eval

__all__ = ["load_for_eval"]
