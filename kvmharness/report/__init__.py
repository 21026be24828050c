"""Reports: the versioned JSON schema, KTAP, JUnit, human text, and the diff of two reports.

Pure functions over plain dicts (no /dev/kvm). The pieces:
    schema   SCHEMA, VERDICTS, build_report, validate_report, load_report, dumps_report, exit_code
    atomic   write_atomic (temp file + fsync + os.replace)
    ktap     to_ktap (KTAP version 1, kselftest dialect)
    junit    to_junit (JUnit XML)
    text     summary_line, render_table, progress_line
    diff     diff_reports, apply_baseline, render_diff, DiffResult, Change
"""

from .atomic import write_atomic
from .diff import Change, DiffResult, apply_baseline, diff_reports, render_diff
from .junit import to_junit
from .ktap import ktap_skip_all, to_ktap
from .schema import (CATEGORIES, SCHEMA, VERDICTS, build_report, count_verdicts, dumps_report,
                     exit_code, load_report, report_problem, validate_report)
from .text import progress_line, render_table, summary_line

__all__ = [
    "CATEGORIES", "SCHEMA", "VERDICTS", "Change", "DiffResult", "apply_baseline", "build_report",
    "count_verdicts", "diff_reports", "dumps_report", "exit_code", "ktap_skip_all", "load_report",
    "progress_line", "render_diff", "render_table", "report_problem", "summary_line", "to_junit",
    "to_ktap",
    "validate_report", "write_atomic",
]
