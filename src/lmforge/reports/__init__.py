"""Human-readable reports of runs.

* :mod:`~lmforge.reports.markdown`: an evaluation run's report.md (tables, signatures, examples);
* :mod:`~lmforge.reports.plots`: loss curves, grouped metric bars, attention heatmaps (PNG);
* :mod:`~lmforge.reports.html`: Markdown to one standalone HTML page;
* :mod:`~lmforge.reports.run_report`: ``lmforge report RUN_DIR`` and its sections;
* :mod:`~lmforge.reports.fonts`: label fonts, including CJK.

Only ``eval_report`` is imported here: the plotting modules load matplotlib, which commands
that never plot should not pay for.
"""

from __future__ import annotations

from lmforge.reports.markdown import eval_report

__all__ = ["eval_report"]
