"""Progress of an evaluation on stderr: answers generated, judge calls made, from the cache, failed.

One live display per run, one line per task (``mmvet: answering``, ``mmvet: judging``...). A judge task's
total grows while it runs, since unparsable replies are asked again. On a terminal the lines update in
place; in a log file or pipe each task's final line is written once, when the run ends.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Task:
    """One line of the board: done of total, and for judge calls how many came from the cache or failed."""

    def __init__(self, progress: Progress, task_id: TaskID, counts: bool):
        self._progress = progress
        self._id = task_id
        self._counts = counts
        self.cached = 0
        self.failed = 0

    def grow(self, count: int) -> None:
        """``count`` more items to do (a judge batch arrives, a re-ask round starts)."""
        task = self._progress.tasks[self._id]
        self._progress.update(self._id, total=(task.total or 0) + count)

    def advance(self, count: int = 1, cached: int = 0, failed: int = 0) -> None:
        self.cached += cached
        self.failed += failed
        note = f"{self.cached} cached, {self.failed} failed" if self._counts else ""
        self._progress.update(self._id, advance=count, note=note)


class ProgressBoard:
    """The live display (a context manager); ``disable=True`` keeps it silent (tests, the Python API)."""

    def __init__(self, console: Console | None = None, disable: bool = False):
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=disable,
        )
        self._open = False
        self._started = False

    def task(self, description: str, total: int = 0, counts: bool = False) -> Task:
        """A new line; ``counts`` shows the cached and failed counts (judge calls). The display starts
        with the first task, so a run that fails its checks prints nothing but its error."""
        if self._open and not self._started:
            self._progress.start()
            self._started = True
        return Task(self._progress, self._progress.add_task(description, total=total, note=""), counts)

    def __enter__(self) -> ProgressBoard:
        self._open = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._open = False
        if self._started:
            self._progress.stop()
            self._started = False


def silent() -> ProgressBoard:
    return ProgressBoard(disable=True)
