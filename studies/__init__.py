"""The study scripts: each declares one :class:`harness.study.Study` (``STUDY``) and runs it with
:func:`run`; its tables, figures and report section are its presentation file,
``results/presentation/<name>.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from harness.study import Study, main
from results.report import write_report


def run(study: Study, argv: Sequence[str] | None = None) -> int:
    """Run ``study`` from the command line (``--report`` writes :mod:`results.report`'s report)."""
    return main(dataclasses.replace(study, report=study.report or write_report), argv)
