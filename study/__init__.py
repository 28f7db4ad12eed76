"""The report pipeline's parts: the profiles (profiles.py) and the matrix of runs they declare
(plan.py), the study in looks (looks.py) and its time estimates (estimate.py), how a run
executes and what it left (execution.py), and where runs execute (launchers.py).
run_report_pipeline.py ties them."""
