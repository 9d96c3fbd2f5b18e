"""The baselines the paper agents are compared against, each on the shared offline runner
(:mod:`aligngym.agents.offline`).

- FISOR's, as OSRL defines them (liuzuxin/OSRL): :mod:`~aligngym.agents.baselines.bc` (BC-All
  ``bc_all`` and BC-Safe ``bc_safe``) and :mod:`~aligngym.agents.baselines.bcq_lag` (``bcq_lag``);
- A2PR's, the policy-regularisation and value-based offline methods: :mod:`~aligngym.agents.baselines.td3bc`
  (``td3bc``), :mod:`~aligngym.agents.baselines.iql` (``iql``, its expectile value learning shared with
  FISOR's reward critics in :mod:`aligngym.agents.iql_core`), :mod:`~aligngym.agents.baselines.cql`
  (``cql``) and BC-All;
- DoC's, return-conditioned behaviour cloning: :mod:`~aligngym.agents.baselines.dt` (``dt``, the
  Decision Transformer; its tabular form for the Bernoulli bandit).

Configs live in ``configs/<agent>/paper.yaml`` (the paper's settings, the Config's defaults) and
``configs/<agent>/cpu.yaml`` (fewer steps): ``aligngym train bc_all/cpu --set task=aligngym/CarRun-v0``.
"""
