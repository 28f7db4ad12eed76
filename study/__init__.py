"""The report pipeline's parts: the plan (plan.py), how a run executes and what it left
(execution.py), and where runs execute (launchers.py). run_report_pipeline.py ties them."""
