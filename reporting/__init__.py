"""The study's report, rendered from its run records and the numbers those runs wrote.

`reporting.write(study, report_dir)` renders REPORT.md, the figures and the summary CSVs. Every table
is built by selecting runs on their declared fields (group, variant, seed, model, source,
target, kind), never by spelling run names, so a run added to the matrix appears in its
table without an edit here. The claims the study makes are judged here too, from the same
numbers: `reporting.claims.judge(study)` tests each claim declared in `claims.CLAIMS` with
`significance` and decides it with `sequential` (Holm within its family, over the looks a
study in looks has taken) and returns its verdict (supported, contradicted, negligible,
inconclusive with the effect it could have detected, or not run), the evidence, what it
spent and the section behind it; `evidence` lays out the evidence and `sync_findings` copies
the verdicts into the documentation. Within reporting/, one direction: common, looks ->
sections (setup, ablations, robustness, corruptions, transfer) -> comparisons -> claims ->
evidence -> writer.

A run record is anything with `name`, `script`, `group`, `fields`, `status`, `reason`,
`command`, `error_tail` and `seconds` (the pipeline's Run); `results` maps run names to
what train.py (final_metrics.json plus `history` and `environment`) or eval.py
(*.metrics.json) wrote.
"""

from reporting.evidence import sync_findings
from reporting.common import Study
from reporting.writer import write

__all__ = ["Study", "write", "sync_findings"]
