"""A unit of a source as a reader would make it, for tests of what is done with its answer."""

from __future__ import annotations

from bpo_data.schema import Unit


def unit(answer: str, index: int = 0, style: str = "qa", source: str = "test") -> Unit:
    return Unit(
        key=f"{source}/rec-{index}/0",
        source=source,
        record_id=f"rec-{index}",
        turn=0,
        image="x.jpg",
        image_root="/data",
        question="What is in the image?",
        answer=answer,
        style=style,
    )
