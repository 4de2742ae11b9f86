"""The fluoroscopy (CPT 76000) billing rules: ``evaluate(case, reference, config) -> list[Finding]``.

Pure functions of the normalized model (:mod:`hooks.model`), the reference data
(:class:`nccidata.api.ReferenceData`) and the resolved configuration (:mod:`hooks.config`);
policy lists are versioned data files in ``hooks/policy/``. See docs/rules.md.
"""
from .engine import Problem, evaluate, guidance_add_on
from .policy import Policy, PolicyEntry, policy

__all__ = ["evaluate", "policy", "Policy", "PolicyEntry", "Problem", "guidance_add_on"]
