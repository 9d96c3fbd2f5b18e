"""Where BARFI's time goes, and the Hessian-vector products done two ways.

    python benchmarks/barfi_speed.py [--task grid_world] [--repeats 20]

On the bundled config ``barfi/<task>`` (the bad heuristic) with a buffer of 60 random-policy
episodes, per update of the schedule (every ``delta`` = 3 episodes): the CPU time of playing the 3
episodes through tianshou's Collector, of the 15 inner REINFORCE steps and of the outer step, and the
outer step's Neumann series with its Hessian-vector products by reverse over reverse (``torch.func.vjp``
of the inner gradient, one graph for every term: what ``agents/barfi.py`` does) against forward over
reverse (``torch.func.jvp`` of the inner gradient per term). One torch thread; CPU seconds
(``time.process_time``), each the median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.func import grad, jvp


def median_cpu(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="grid_world")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import aligngym.agents.barfi as barfi
    from aligngym.agents.config import load_config
    from aligngym.agents.offline import make_env, play_episodes

    config = load_config(f"barfi/{args.task}", ["task_options.aux=bad", "device=cpu", "show_progress=false"])
    env = make_env(config)
    learner = barfi.BarfiLearner(config, env, torch.device("cpu"))
    env.close()
    for k in range(20):
        for record in play_episodes(config, learner.policy, config.delta, seed=k).records:
            learner.buffer.add(record)
    learner.episodes, learner.warm = 60, True
    phi = learner.phi()

    def inner_steps() -> None:
        for _ in range(config.delta * config.inner_mul):
            batch = learner.batch(learner.buffer.sample(config.batch_size, learner.rng))
            returns = barfi.discounted_returns(learner.reward.reward(phi, batch) * batch["mask"],
                                               learner.reward.discount(phi))
            learner.policy_step(batch, returns)

    state = learner.state_dict()
    collect = median_cpu(lambda: play_episodes(config, learner.policy, config.delta, seed=99), args.repeats)
    inner = median_cpu(inner_steps, args.repeats)
    outer = median_cpu(learner.outer_step, args.repeats)
    learner.load_state_dict(state)

    batch = learner.batch(learner.buffer.sample(config.hess_mul * config.batch_size, learner.rng, skip_last=config.delta))
    v = learner.primary_gradient()
    reverse = median_cpu(lambda: learner.hypergradient(batch, v), args.repeats)
    theta = {n: p.detach() for n, p in learner.policy.params().items()}

    def inner_grad(t, ph):
        returns = barfi.discounted_returns(learner.reward.reward(ph, batch) * batch["mask"], learner.reward.discount(ph))
        return grad(lambda u: barfi.reinforce_objective(learner.policy, u, batch, returns, config.entropy))(t)

    def forward_over_reverse() -> None:  # the same hypergradient, its Hessian-vector products by jvp
        p = barfi.neumann_inverse(lambda u: jvp(lambda t: inner_grad(t, phi), (theta,), (u,))[1], v,
                                  config.neumann_steps, config.neumann_alpha)
        grad(lambda ph: sum((g * p[n]).sum() for n, g in inner_grad(theta, ph).items()))(phi)

    forward = median_cpu(forward_over_reverse, args.repeats)
    total = collect + inner + outer
    print(f"barfi/{args.task}, bad heuristic, one torch thread; CPU ms per update (median of {args.repeats}):")
    print("| part | CPU ms | share |")
    print("|---|---|---|")
    for name, value in (("play 3 episodes (Collector)", collect), (f"{config.delta * config.inner_mul} inner steps", inner),
                        ("outer step (hypergradient and update)", outer)):
        print(f"| {name} | {1000 * value:.1f} | {value / total:.0%} |")
    print(f"\nthe outer step's hypergradient, {config.neumann_steps} Neumann terms: reverse over reverse "
          f"(vjp, one graph) {1000 * reverse:.1f} ms, forward over reverse (jvp per term) {1000 * forward:.1f} ms: "
          f"{forward / reverse:.1f}x")


if __name__ == "__main__":
    main()
