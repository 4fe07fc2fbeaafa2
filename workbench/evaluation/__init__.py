"""Evaluation: lm-evaluation-harness in process over the workbench's own models and adapters.

config.py   EvalConfig, what an evaluation job asks for
tasks.py    where tasks come from (lm-eval's, the shipped ones, <home>/tasks, WORKBENCH_TASK_ROOTS)
            and the checks made before any job starts
harness.py  lm-eval's LM over a loaded model (mlx-lm's MLXLM), with progress and stop; `run`
samples.py  lm-eval's results and logged items as plain JSON, one flat dict per item
shipped/    the shipped offline tasks (YAML and items), built from the workbench's own samples
"""
