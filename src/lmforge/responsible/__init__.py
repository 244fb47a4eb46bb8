"""Responsible use: measure bias (``audit``), mitigate it (``cda``), and look inside models.

Counterfactual data augmentation (:mod:`lmforge.responsible.cda`) runs inside training when
a run config turns on ``augment.cda``; the bias audit (:mod:`lmforge.responsible.audit`)
compares what a model does with prompts that differ only in a demographic term.
"""
