"""Which objects a source's answers name together: what the rules injector adds to an answer.

The LLM injector is asked to "add an object that usually appears in this kind of scene but is
not mentioned" (``recipes/prompts/description.yaml``), and it knows what usually appears from
what it read. The rules injector learns the same from the source it rewrites: how many answers
name each COCO class, and how many name two classes together. An answer naming a dog but no ball,
in a source where most answers that name a dog also name a ball, gets the ball added: the error a
model makes when it answers from habit (the co-occurrence hallucinations of CHAIR's authors and
of LURE), and the one a preference pair should teach it not to make.

Counted in the plan's first pass (which reads every unit anyway) over a source's first
``MAX_ANSWERS`` units in file order, whichever shard counts, so every shard and every rerun sees
the same table, and one source's answers never shape another's. The cap bounds the cost on a
million captions (40 µs a counted answer, ``benchmarks/plan_pass.py``); habits shared by a fifth
of an object's answers are settled long before it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

# A partner is worth adding when it is named in at least this share of the answers naming the
# object, at least this many times more often than in answers at large, over at least this many
# answers: a habit of the data, not a coincidence of a few answers.
MIN_SHARE = 0.2
MIN_LIFT = 1.5
MIN_ANSWERS = 20
MAX_ANSWERS = 50_000

Partners = dict[str, tuple[tuple[str, float], ...]]  # class -> (class usually named with it, share)


@dataclass
class CoOccurrence:
    """Answers counted, answers naming each class, and answers naming each pair of classes."""

    answers: int = 0
    named: Counter = field(default_factory=Counter)
    together: Counter = field(default_factory=Counter)  # (class, class) in sorted order

    def add(self, classes: set[str]) -> None:
        """Count one answer that names ``classes``."""
        self.answers += 1
        self.named.update(classes)
        self.together.update(combinations(sorted(classes), 2))

    def usual(self) -> frozenset[str]:
        """The classes named in at least ``MIN_ANSWERS`` answers: the objects this source is about."""
        return frozenset(cls for cls, count in self.named.items() if count >= MIN_ANSWERS)

    def partners(self) -> Partners:
        """For each class, the classes its answers usually name too, with that share, most usual first."""
        found: dict[str, list[tuple[str, float]]] = {}
        for (one, other), both in self.together.items():
            for cls, partner in ((one, other), (other, one)):
                if self.named[cls] < MIN_ANSWERS:
                    continue
                share = both / self.named[cls]
                lift = share / (self.named[partner] / self.answers)
                if share >= MIN_SHARE and lift >= MIN_LIFT:
                    found.setdefault(cls, []).append((partner, share))
        return {cls: tuple(sorted(near, key=lambda p: (-p[1], p[0]))) for cls, near in sorted(found.items())}
