"""Reports: equity and position over time, swap moments marked, from a tape."""

from ._report import Report as Report
from ._report import build_report as build_report
from ._report import write_report as write_report

__all__ = ["Report", "build_report", "write_report"]
