"""The error every reader raises for a file it cannot use: the message is one line, `<file>: <problem>`.

Batch jobs turn it into an errors-table row (file, problem) and go on; the command lines print it and exit 2.
"""
from __future__ import annotations


class FileProblem(ValueError):
    """A file that cannot be used; `source` names it, `problem` says why."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem
