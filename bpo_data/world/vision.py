"""Stage 1: the world model's vision tower, pre-trained to read the scene graph off every patch.

LLaVA starts from a pretrained CLIP encoder; there is none for this world, and contrastive
pre-training from scratch costs more CPU than the whole budget (measured: 1,100 s for a tower
whose features the language model still could not use). This stands in for the pretrained CLIP:
a supervised, dense objective taken from the scene graph, far stronger per CPU-second. The
picture's 3x3 grid of cells is exactly the tower's 3x3 grid of 32-px patches, so each patch
feature of the layer LLaVA reads (``vision_feature_layer=-2``, CLS dropped) is trained, through
linear heads that are thrown away afterwards, to say what its cell holds: the object's class,
colour, count and size, and in a corner the sign's text; the scene's setting is read from the mean
of the patches. Labels are per cell and independent of each other, so the tower learns no
co-occurrence: the language prior is learned later, from the training text alone.

Nor does it learn the world's colour statistics. A real CLIP is pre-trained on far more than
the instruction data: it has seen purple dogs. So stage 1 reads its own colour-balanced pictures
(``pretraining_params``: every class in each of its colours alike, drawn from the seeded split
``pretrain``), not the training split, where 80 % of buses are yellow. Trained on the training
split instead (200 steps), the tower read the class of an atypically coloured object right 74 % of
the time on held-out violating scenes against 99.5 % for typically coloured ones: a visual
"yellow means bus" that no training of the language model can undo, and that drowned the language
prior BPO is about in recognition errors. On the balanced pictures (300 steps): 98.7 % and 98.4 %.

A penalty keeps the features' root-mean-square near 1, so the unit-variance ε of the feature-space
noise in ``bpo_data.weaken`` is on the scale of the features, as it is for a real CLIP's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from bpo_data.world.params import WORLD, WorldParams
from bpo_data.world.scenes import Scene, cell_centre, sample_scene

VISION_FEATURE_LAYER = -2
PRETRAIN_SPLIT = "pretrain"  # the seeded split stage 1 draws its pictures from


@dataclass(frozen=True)
class VisionSettings:
    steps: int = 300  # at 600 the cells read perfectly, yet the language model then never learned the signs
    pictures: int = 12000  # colour-balanced pre-training pictures (split ``pretrain``)
    batch_size: int = 64
    learning_rate: float = 3e-3
    rms_weight: float = 0.1  # weight of the (feature RMS - 1)^2 penalty


def pretraining_params(params: WorldParams = WORLD) -> WorldParams:
    """``params`` without typical colours: each class comes in each of its colours alike."""
    return replace(params, classes=tuple(replace(c, typical=None, typical_rate=0.0) for c in params.classes))


def pretraining_scenes(count: int, seed: int, params: WorldParams = WORLD) -> list[Scene]:
    """The stage-1 scenes: seeded, colour-balanced, in a split of their own."""
    balanced = pretraining_params(params)
    return [
        sample_scene(seed, PRETRAIN_SPLIT, index, f"{PRETRAIN_SPLIT}-{index}", params=balanced)
        for index in range(count)
    ]


def cell_index(place: str, params: WorldParams = WORLD) -> int:
    """The patch (row-major over the 3x3 grid) that holds a position or corner's cell."""
    x, y = cell_centre(place, params)
    cell = params.image_size / 3
    return int(y // cell) * 3 + int(x // cell)


class Labels:
    """Per-cell targets of a scene (0 = nothing there) and the scene's setting."""

    def __init__(self, params: WorldParams = WORLD):
        self.params = params
        self.classes = {name: i + 1 for i, name in enumerate(params.class_names)}
        self.colours = {name: i + 1 for i, name in enumerate(params.colours)}
        self.counts = max(params.count_weights) + 1
        self.sizes = {name: i + 1 for i, name in enumerate(params.sizes)}
        self.signs = {text: i + 1 for i, text in enumerate((*params.sign_words, *params.sign_numbers))}
        self.settings = {name: i for i, name in enumerate(params.settings)}

    @property
    def cell_heads(self) -> dict[str, int]:
        return {
            "cls": len(self.classes) + 1,
            "colour": len(self.colours) + 1,
            "count": self.counts,
            "size": len(self.sizes) + 1,
            "sign": len(self.signs) + 1,
        }

    def of(self, scene: Scene) -> dict[str, torch.Tensor]:
        cells = {head: [0] * 9 for head in self.cell_heads}
        for obj in scene.objects:
            i = cell_index(obj.position, self.params)
            cells["cls"][i] = self.classes[obj.cls]
            cells["colour"][i] = self.colours[obj.colour]
            cells["count"][i] = obj.count
            cells["size"][i] = self.sizes[obj.size]
        if scene.sign is not None:
            cells["sign"][cell_index(scene.sign.corner, self.params)] = self.signs[scene.sign.text]
        out = {head: torch.tensor(values) for head, values in cells.items()}
        out["setting"] = torch.tensor(self.settings[scene.setting])
        return out


class DenseReader(nn.Module):
    """A CLIP vision tower with linear heads on its patch features (the ones LLaVA reads)."""

    def __init__(self, tower: nn.Module, labels: Labels, rms_weight: float):
        super().__init__()
        hidden = tower.config.hidden_size
        self.tower, self.rms_weight = tower, rms_weight
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in labels.cell_heads.items()})
        self.setting = nn.Linear(hidden, len(labels.settings))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        states = self.tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        return states[VISION_FEATURE_LAYER][:, 1:]

    def forward(self, pixel_values: torch.Tensor, setting: torch.Tensor, **cells: torch.Tensor) -> dict:
        features = self.features(pixel_values)
        loss = nn.functional.cross_entropy(self.setting(features.mean(1)), setting)
        for name, head in self.heads.items():
            logits = head(features)
            loss = loss + nn.functional.cross_entropy(logits.flatten(0, 1), cells[name].flatten())
        rms = features.pow(2).mean().sqrt()
        return {"loss": loss + self.rms_weight * (rms - 1.0) ** 2}


class _Pictures(torch.utils.data.Dataset):
    def __init__(self, pixels: torch.Tensor, targets: list[dict[str, torch.Tensor]]):
        self.pixels, self.targets = pixels, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index].float(), **self.targets[index]}


def pretrain_vision_tower(
    scenes: Sequence[Scene],
    pixels: torch.Tensor,
    tower: nn.Module,
    settings: VisionSettings,
    seed: int,
    held_out: Sequence[Scene],
    held_out_pixels: torch.Tensor,
    work_dir: str,
    params: WorldParams = WORLD,
    violating: Sequence[Scene] = (),
    violating_pixels: torch.Tensor | None = None,
) -> dict:
    """Train ``tower`` (a ``CLIPVisionModel``, in place) on the scenes' pictures ``pixels``.

    Returns the training loss, each head's accuracy on the ``held_out`` scenes' pictures, and the
    class head's accuracy by colour on those and on the ``violating`` ones (atypical colours).
    """
    from transformers import Trainer, TrainingArguments

    labels = Labels(params)
    torch.manual_seed(seed)
    reader = DenseReader(tower, labels, settings.rms_weight)
    args = TrainingArguments(
        output_dir=work_dir,
        per_device_train_batch_size=settings.batch_size,
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=50,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    dataset = _Pictures(pixels, [labels.of(s) for s in scenes])
    result = Trainer(model=reader, args=args, train_dataset=dataset).train()
    reader.eval()
    accuracy = head_accuracy(reader, held_out_pixels, [labels.of(s) for s in held_out])
    by_colour = {"held_out": class_accuracy_by_colour(reader, held_out_pixels, held_out, labels)}
    if violating_pixels is not None:
        by_colour["violating"] = class_accuracy_by_colour(reader, violating_pixels, violating, labels)
    return {
        "loss": result.training_loss,
        "steps": result.global_step,
        "pictures": len(scenes),
        "held_out_accuracy": accuracy,
        "class_accuracy_by_colour": by_colour,
    }


def class_accuracy_by_colour(
    reader: DenseReader, pixels: torch.Tensor, scenes: Sequence[Scene], labels: Labels
) -> dict[str, float | None]:
    """The class head's accuracy on objects in their class's typical colour, in another colour, and
    of classes without a typical colour (None where a group is empty): a tower that learned the
    world's colour statistics reads the second group worse."""
    with torch.inference_mode():
        predicted = reader.heads["cls"](reader.features(pixels.float())).argmax(-1)
    tally = {"typical": [0, 0], "atypical": [0, 0], "no_typical": [0, 0]}
    for scene, cells in zip(scenes, predicted):
        for obj in scene.objects:
            typical = labels.params.cls(obj.cls).typical
            group = "no_typical" if typical is None else "typical" if obj.colour == typical else "atypical"
            tally[group][0] += int(cells[cell_index(obj.position, labels.params)] == labels.classes[obj.cls])
            tally[group][1] += 1
    return {group: (right / total if total else None) for group, (right, total) in tally.items()}


def head_accuracy(reader: DenseReader, pixels: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict:
    """Per head, the fraction of occupied cells (all scenes for the setting) read right."""
    with torch.inference_mode():
        features = reader.features(pixels.float())
    scores = {
        "setting": float(
            (reader.setting(features.mean(1)).argmax(-1) == torch.stack([t["setting"] for t in targets]))
            .float()
            .mean()
        )
    }
    for name, head in reader.heads.items():
        truth = torch.stack([t[name] for t in targets])
        occupied = truth > 0
        scores[name] = float((head(features).argmax(-1) == truth)[occupied].float().mean())
    scores["feature_rms"] = float(features.pow(2).mean().sqrt())
    scores["feature_std_across_pictures"] = float(features.std(0).mean())
    return scores
