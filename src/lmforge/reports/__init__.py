"""Human-readable reports of runs: Markdown tables and side-by-side examples."""

from __future__ import annotations

from lmforge.reports.markdown import eval_report

__all__ = ["eval_report"]
