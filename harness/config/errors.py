"""The one error type of config validation."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem (or several). The message lists every problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} config problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
