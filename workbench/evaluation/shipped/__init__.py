"""The workbench's shipped evaluation tasks: lm-eval YAMLs and their items (make_tasks.py says what
they test; `heldout_questions()` lists what a training set for them must leave out)."""

from workbench.evaluation.shipped.make_tasks import heldout_questions  # noqa: F401
