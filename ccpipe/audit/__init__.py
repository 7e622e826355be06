"""Dataset quality audits: one self-contained HTML report per run (``ccpipe audit``).

See docs/audit.md.
"""

from ccpipe.audit.data import AuditConfig, load_run
from ccpipe.audit.report import build_report, write_report

__all__ = ["AuditConfig", "build_report", "load_run", "write_report"]
