"""preempt: a reproducibility workflow for preemptive adversarial defenses.

The data flows dataset -> models -> robust examples -> reversions -> attacks -> metrics -> report;
each arrow is a stage in ``preempt.stages`` and a node of the DAG in ``preempt.dag``.
"""

__version__ = "0.1.0"
