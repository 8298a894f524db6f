"""Strip the chatter instruction-tuned models wrap around a rewrite: preambles, labels, quotes, notes.

"Sure, here is the modified description:", "**Rewritten answer:**", wrapping quotes or a code
fence, a trailing "Note: I changed the colour" — none of it is part of the rejected answer.
"""

from __future__ import annotations

import re

from bpo_data.text import normalise

_COURTESY = r"(?:sure|certainly|of\s+course|okay|ok|absolutely|alright|all\s+right|no\s+problem)"
_MODIFIER = (
    r"(?:modified|rewritten|revised|altered|changed|updated|edited|new|incorrect|wrong|hallucinated|"
    r"corrupted|final)"
)
_SUBJECT = r"(?:description|answer|caption|response|version|text|output|rewrite|result)"
_LABEL_WORDS = (
    rf"(?:(?:the\s+|my\s+)?(?:{_MODIFIER}\s+)+{_SUBJECT}|description|answer|caption|response|rewrite)"
)
_BOLD = r"(?:\*\*|__)"
_APOSTROPHE = r"(?:'|’)"

_FLAGS = re.IGNORECASE
# "Sure, here is the modified description:" / "Here's the rewritten answer:" (same line or the next).
_INTRO = re.compile(
    rf"\A(?:{_COURTESY}\s*[,.!]*\s*)?(?:here{_APOSTROPHE}s|here\s+is|here\s+are|below\s+is)\b"
    rf"[^\n:]*?\b(?:{_MODIFIER}|{_SUBJECT})\b[^\n:]*:\s*",
    _FLAGS,
)
# "The modified description is as follows:" / "My rewritten answer would be:"
_IS_INTRO = re.compile(
    rf"\A(?:the\s+|my\s+)?(?:{_MODIFIER}\s+)+{_SUBJECT}\s+(?:is|would\s+be|reads)(?:\s+as\s+follows)?\s*:\s*",
    _FLAGS,
)
_HERE_YOU_GO = re.compile(rf"\A(?:{_COURTESY}\s*[,.!]*\s*)?here\s+you\s+go\s*[.!:]*\s*", _FLAGS)
# A first line that is only politeness: "Sure!" / "Certainly, I can do that." followed by the text.
_COURTESY_LINE = re.compile(
    rf"\A{_COURTESY}\s*[,.!]*(?:\s*(?:i\s+can\s+(?:do\s+that|help(?:\s+with\s+that)?)|"
    rf"i{_APOSTROPHE}d\s+be\s+happy\s+to(?:\s+help)?|happy\s+to\s+help))?\s*[.!]*[ \t]*\n\s*(?=\S)",
    _FLAGS,
)
# "I have modified the description as follows:" on a line of its own.
_DID_LINE = re.compile(
    rf"\Ai(?:{_APOSTROPHE}ve|\s+have)?\s+(?:modified|rewritten|rewrote|changed|revised|altered|introduced|"
    r"made|added|updated|edited)\b[^\n]*:[ \t]*\n\s*",
    _FLAGS,
)
# "Modified description:", "**Rewritten answer:**", "### New caption" on its own line, "Answer:".
_LABEL = re.compile(
    rf"\A(?:#{{1,6}}\s*)?{_BOLD}?\s*{_LABEL_WORDS}\s*(?:{_BOLD}?\s*:\s*{_BOLD}?|{_BOLD}\s*\n|\s*\n(?=\S))\s*",
    _FLAGS,
)
# "Note: ...", "Changes made:" lists, "(Note: ...)", on a new line: everything after is commentary.
_TRAIL_LABELLED = re.compile(
    rf"\n\s*(?:[-*]\s*)?\(?\s*{_BOLD}?\s*(?:notes?|changes(?:\s+made)?|modifications(?:\s+made)?|"
    r"edits(?:\s+made)?|explanation|errors?\s+(?:introduced|added)|hallucinations?\s+(?:introduced|added)|"
    rf"summary\s+of\s+changes|what\s+(?:i|was)\s+changed)\s*{_BOLD}?\s*:.*\Z",
    _FLAGS | re.DOTALL,
)
# "I changed the colour of ..." / "In this version, ..." as a paragraph after a blank line.
_TRAIL_SENTENCE = re.compile(
    rf"\n[ \t]*\n\s*\(?\s*(?:i(?:{_APOSTROPHE}ve|\s+have)?\s+(?:changed|modified|replaced|added|removed|"
    r"introduced|altered|made|swapped|updated)|in\s+this\s+(?:version|rewrite|modified|rewritten|revised)|"
    r"the\s+(?:changes|modifications|errors)\s+(?:are|were|include|made)|this\s+(?:version|rewrite)\s)\b.*\Z",
    _FLAGS | re.DOTALL,
)
# "... on the table. (Note: I changed the colour.)" at the very end of the text.
_TRAIL_PAREN = re.compile(
    r"\s*\(\s*(?:note\b|i\s+(?:changed|modified|replaced|added|removed|introduced|altered|swapped)\b)"
    r"[^()]*\)\s*\Z",
    _FLAGS,
)
_CODE_FENCE = re.compile(r"\A```[\w-]*[ \t]*\n?(.*?)\n?```\Z", re.DOTALL)
_QUOTE_PAIRS = {'"': '"', "“": "”", "'": "'", "‘": "’", "`": "`", "«": "»"}
_BARE_QUOTE = {
    "'": re.compile(r"(?<![^\W\d_])'|'(?![^\W\d_])"),
    "‘": re.compile(r"(?<![^\W\d_])’|’(?![^\W\d_])"),
}

_LEADING = (_INTRO, _IS_INTRO, _HERE_YOU_GO, _COURTESY_LINE, _DID_LINE, _LABEL)
_TRAILING = (_TRAIL_LABELLED, _TRAIL_SENTENCE, _TRAIL_PAREN)


def _unwrap(text: str) -> str:
    fenced = _CODE_FENCE.match(text)
    if fenced:
        return fenced.group(1).strip()
    if len(text) < 2 or _QUOTE_PAIRS.get(text[0]) != text[-1]:
        return text
    inner = text[1:-1]
    bare = _BARE_QUOTE.get(text[0])
    if bare is not None:
        # Apostrophes inside words ("dog's") are not quotes; any other quote mark means the text
        # quotes several things ('"OPEN" on the left, "CLOSED" on the right') and is not wrapped.
        return text if bare.search(inner) else inner.strip()
    return text if text[0] in inner or text[-1] in inner else inner.strip()


def clean_rewrite(text: str, original: str | None = None) -> str:
    """The rewrite without the model's preamble, labels, wrapping quotes and trailing notes.

    A leading phrase is kept when the ground truth starts with it too (``original``), and a
    trailing "Note:" section when the ground truth has one: then it is part of the answer ("Sure,
    the sign says OPEN."), not the model talking about its task. Politeness alone is only removed
    when it stands on a line of its own.
    """
    original_norm = normalise(original) if original else ""
    trailing = [pattern for pattern in _TRAILING if not (original and pattern.search(original))]
    current = text.strip()
    for _ in range(4):
        previous = current
        for pattern in _LEADING:
            match = pattern.match(current)
            if match and not (original_norm and original_norm.startswith(normalise(match.group()))):
                current = current[match.end() :].lstrip()
        for pattern in trailing:
            current = pattern.sub("", current).rstrip()
        current = _unwrap(current)
        if current == previous:
            break
    return current
