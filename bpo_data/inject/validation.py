"""Whether a cleaned rewrite can be a rejected answer, and the reject reason when it cannot.

A usable negative differs from the ground truth, is not a refusal, and keeps roughly its length
(the paper's negatives are the same kind of answer with wrong details, not a different answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bpo_data.recipe import ValidationSpec
from bpo_data.text import normalise

_APOSTROPHE = r"(?:'|’)"
_FLAGS = re.IGNORECASE
_REFUSAL = re.compile(
    rf"\A\W*(?:i{_APOSTROPHE}m\s+sorry|i\s+am\s+sorry|sorry\b|i\s+apologi[sz]e|i\s+cannot|i\s+can\s*not|"
    rf"i\s+can{_APOSTROPHE}t|i{_APOSTROPHE}m\s+(?:not\s+able|unable)|i\s+am\s+(?:not\s+able|unable)|"
    rf"i\s+won{_APOSTROPHE}t|i\s+will\s+not|as\s+an\s+ai\b|as\s+a\s+language\s+model|"
    r"unfortunately,?\s+i\b)",
    _FLAGS,
)


@dataclass
class Verdict:
    ok: bool
    reason: str | None
    detail: str


def validate_rewrite(original: str, rewrite: str, spec: ValidationSpec) -> Verdict:
    """Whether a cleaned rewrite can be a rejected answer; ``reason`` is the reject code when not."""
    if not rewrite.strip():
        return Verdict(False, "invalid_rewrite:empty", "the rewrite is empty after cleaning")
    if _REFUSAL.match(rewrite) and not _REFUSAL.match(original):
        return Verdict(
            False, "invalid_rewrite:refusal", f"the model refused instead of rewriting: {rewrite[:80]!r}"
        )
    if normalise(rewrite) == normalise(original):
        return Verdict(
            False,
            "invalid_rewrite:identical",
            "the rewrite equals the ground truth (ignoring case, spacing and punctuation)",
        )
    ratio = len(rewrite) / max(len(original), 1)
    sizes = f"{len(rewrite)} vs {len(original)} characters, ratio {ratio:.2f}"
    if ratio < spec.min_length_ratio:
        return Verdict(
            False, "invalid_rewrite:too_short", f"{sizes}, below min_length_ratio {spec.min_length_ratio}"
        )
    if ratio > spec.max_length_ratio:
        return Verdict(
            False, "invalid_rewrite:too_long", f"{sizes}, above max_length_ratio {spec.max_length_ratio}"
        )
    return Verdict(True, None, f"accepted: {sizes}")
