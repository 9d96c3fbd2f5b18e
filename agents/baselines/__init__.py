"""Safe offline baselines that FISOR is compared against, as OSRL defines them (liuzuxin/OSRL).

- :mod:`~aligngym.agents.baselines.bc`: BC-All (``bc_all``) and BC-Safe (``bc_safe``);
- :mod:`~aligngym.agents.baselines.bcq_lag`: BCQ-Lag (``bcq_lag``).

Each runs on the shared offline runner (:mod:`aligngym.agents.offline`); configs live in
``configs/<agent>/paper.yaml`` (OSRL's settings, the Config's defaults) and ``configs/<agent>/cpu.yaml``
(fewer steps): ``aligngym train bc_all/cpu --set task=aligngym/CarRun-v0``.
"""
