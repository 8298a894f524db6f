"""The one place that turns a recipe's model and run settings into engines.

Used by every way of generating (CLI, Python API, launch): the vision engine for weakening and the
text engine for LLM injection, sharing one loaded model where they can (hf with hf, vllm with
vllm), built only for what the run needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bpo_data.engines.base import TextEngine, VisionEngine
from bpo_data.models import resolve_model
from bpo_data.recipe import RunSettings


@dataclass
class Engines:
    vision: VisionEngine | None = None
    text: TextEngine | None = None
    names: dict[str, str] = field(default_factory=dict)  # "vision"/"text" → generator id recorded in pairs
    torch_threads_before: int | None = None  # run.cpu_threads changed torch's count; close() puts it back

    def close(self) -> None:
        """Release models, threads and connections (the OpenAI engine runs its own event loop)."""
        for engine in (self.vision, self.text):
            if engine is not None:
                engine.close()
        self.vision = self.text = None
        if self.torch_threads_before is not None:
            import torch

            torch.set_num_threads(self.torch_threads_before)
            self.torch_threads_before = None


def build_engines(
    model: str, run: RunSettings, seed: int, *, vision: bool, text: bool, text_model: str | None = None
) -> Engines:
    """Engines for ``model`` (the MLLM): ``vision`` for weakening, ``text`` for LLM injection.

    ``text_model`` is the served model's name for the ``openai`` engine (the hf and vllm engines
    rewrite with the MLLM's own language model).
    """
    weaken = run.weaken.engine if vision else None
    inject = run.inject.engine if text else None
    engines = Engines()
    path = resolve_model(model) if {weaken, inject} & {"hf", "vllm"} else model
    try:
        if "hf" in (weaken, inject):
            from bpo_data.engines.hf import HFTextEngine, HFVisionEngine, LlavaRuntime

            runtime = LlavaRuntime.load(path, run.device, run.dtype)
            if run.cpu_threads is not None and runtime.device.type == "cpu":  # the setting is for the CPU
                import torch

                engines.torch_threads_before = torch.get_num_threads()
                torch.set_num_threads(run.cpu_threads)
            if weaken == "hf":
                engines.vision = HFVisionEngine(runtime)
            if inject == "hf":
                engines.text = HFTextEngine(runtime)
        if "vllm" in (weaken, inject):
            from bpo_data.engines.vllm_engine import VllmRuntime, VllmTextEngine, VllmVisionEngine

            vllm_runtime = VllmRuntime.load(
                path, run.vllm, run.device, run.dtype, seed, images=weaken == "vllm"
            )
            if weaken == "vllm":
                engines.vision = VllmVisionEngine(vllm_runtime)
            if inject == "vllm":
                engines.text = VllmTextEngine(vllm_runtime)
        if inject == "openai":
            from bpo_data.engines.openai_compat import OpenAITextEngine

            settings = run.inject
            engines.text = OpenAITextEngine(
                text_model or "",
                base_url=settings.base_url,
                api_key_env=settings.api_key_env,
                concurrency=settings.concurrency,
                max_retries=settings.max_retries,
                timeout_s=settings.timeout_s,
            )
    except BaseException:
        engines.close()
        raise
    if weaken is not None:
        engines.names["vision"] = f"{weaken}:{model}"
    if inject is not None:
        engines.names["text"] = f"openai:{text_model}" if inject == "openai" else f"{inject}:{model}"
    return engines
