"""Compact LoRA DPO (BPO) and SFT on LLaVA-1.5 with stock TRL + PEFT, trained on a bpo-data export.

Python API: ``TrainConfig`` (every setting, the paper's defaults), ``train_dpo`` / ``train_sft``
(``trainer_min.dpo`` / ``trainer_min.sft``), ``merge_adapter`` (``trainer_min.merge``), ``plot_runs``
(``trainer_min.plot``) and ``load_for_eval`` for evaluation code. The heavy libraries load on first use,
so importing the package is cheap.
"""

from trainer_min.config import TrainConfig
from trainer_min.load import load_for_eval

__all__ = ["TrainConfig", "load_for_eval"]
