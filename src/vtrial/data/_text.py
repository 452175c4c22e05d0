"""Shared by the readers of fitted models' text files (:mod:`~vtrial.data.nonmem`,
:mod:`~vtrial.data.monolix`): the problems of one file, at most
:data:`~vtrial.data.tables.MAX_TABLE_PROBLEMS` of one kind listed, then a count, and
short lists of names for a problem's message.
"""

from __future__ import annotations

from vtrial.data.tables import MAX_TABLE_PROBLEMS
from vtrial.errors import Problem

__all__ = ["FileProblems", "listed"]

#: listed names of missing matrix elements in one problem
_MAX_LISTED = 6


class FileProblems:
    """Problems of one file, at most :data:`MAX_TABLE_PROBLEMS` of one kind listed."""

    def __init__(self, file: str):
        self.file = file
        self.listed: list[Problem] = []
        self.counts: dict[str, int] = {}

    def add(self, where: str, message: str, kind: str | None = None) -> None:
        key = kind or message
        n = self.counts[key] = self.counts.get(key, 0) + 1
        if n <= MAX_TABLE_PROBLEMS:
            self.listed.append(Problem(self.file, where, message))

    def __bool__(self) -> bool:
        return bool(self.listed)

    def all(self) -> list[Problem]:
        more = [
            Problem(self.file, "", f"{n - MAX_TABLE_PROBLEMS} more problem(s) of the kind: {k}")
            for k, n in self.counts.items()
            if n > MAX_TABLE_PROBLEMS
        ]
        return self.listed + more


def listed(names: list[str]) -> str:
    head = ", ".join(names[:_MAX_LISTED])
    return head + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")
