"""The study's report, rendered from its run records and the numbers those runs wrote.

`reporting.write(study, report_dir)` renders REPORT.md, the figures and the summary CSVs. Every table
is built by selecting runs on their declared fields (group, variant, seed, model, source,
target, kind), never by spelling run names, so a run added to the matrix appears in its
table without an edit here. The claims the study makes are judged here too, from the same
numbers: `reporting.claims.claims(study)` returns each claim with its verdict (supported, contradicted,
inconclusive at this budget, or not run), the evidence with its uncertainty, and the
section behind it.

A run record is anything with `name`, `script`, `group`, `fields`, `status`, `reason`,
`command`, `error_tail` and `seconds` (the pipeline's Run); `results` maps run names to
what train.py (final_metrics.json plus `history` and `environment`) or eval.py
(*.metrics.json) wrote.
"""

from reporting.common import Study
from reporting.writer import write

__all__ = ["Study", "write"]
