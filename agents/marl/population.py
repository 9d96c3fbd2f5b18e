"""Population training of independent DQN learners on the punishment/reputation game.

The loop is the paper's (Dasgupta & Musolesi; reference section 1.3): episodes of the game, in which
every network that stored a transition does one gradient update, with reputations and last moves
carried from one episode to the next (``carry_memory``). Per episode it logs the ``coop/*`` metrics,
the learners' losses (``loss/<decision>``) and exploration (``train/epsilon_<decision>``); every
``plot_every`` episodes the heatmaps of who chose and who punished whom (TensorBoard images and PNG
files), and at the end the training curves; and it writes a checkpoint every ``checkpoint_every``
episodes from which training resumes exactly. ``train_seeds`` trains several seeds of one condition
at once, each into its own run folder (the IPD's in one :class:`~aligngym.agents.marl.batched.SeedBatch`,
exactly as each would train alone). ``evaluate`` plays the trained population greedily, optionally
with scripted partners in place of all but ``focal`` agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from aligngym.agents.config import ConfigError, RunConfig
from aligngym.agents.marl.batched import SeedBatch
from aligngym.agents.marl.collector import PopulationCollector, PopulationReplay
from aligngym.agents.marl.dqn import IndependentDQN, IndependentDQNConfig
from aligngym.agents.marl.plots import curves, heatmap
from aligngym.agents.train import CheckpointError, Run, checkpoint_errors, read_curves, resolve_device, to_numpy
from aligngym.envs.cooperation import punishment_v0
from aligngym.envs.cooperation.core import METRIC_NAMES, PunishmentCore
from aligngym.envs.cooperation.rules import DecisionKind, GameRules
from aligngym.envs.cooperation.scripted import BOTS, BotTeam


class Config(RunConfig):
    """Independent DQN learners on ``aligngym/punishment-v0``."""

    hparam_metrics: ClassVar[tuple[str, ...]] = ("coop/cooperation_rate", "coop/mean_reward",
                                                 "eval/cooperation_rate")

    agent: Literal["independent_dqn"] = "independent_dqn"
    task: Literal["aligngym/punishment-v0"] = "aligngym/punishment-v0"
    episodes: int = Field(2000, ge=1)  # training episodes (the paper: 2000)
    carry_memory: bool = True  # reputations and last moves persist across episodes (the paper)
    checkpoint_every: int = Field(50, ge=1)  # episodes between checkpoints
    plot_every: int = Field(100, ge=1)  # episodes per window of the selection / punishment heatmaps
    eval_episodes: int = Field(20, ge=1)  # greedy episodes for `aligngym eval`
    show_progress: bool = True  # progress bar on the terminal
    env: GameRules = GameRules()  # the game's rules
    learner: IndependentDQNConfig = IndependentDQNConfig()  # the learners

    @model_validator(mode="after")
    def _reference_transitions_need_the_ipd(self) -> Config:
        chosen = [k for k in ("select_every_round", "punish_as_bandit", "play_next_state_in_game")
                  if getattr(self.learner, k)]
        if chosen and self.env.game != "ipd":
            raise ValueError(f"learner.{' and learner.'.join(chosen)}: the reference's transitions are "
                             "offered for the IPD only (the centipede trains through the PettingZoo collector)")
        return self

    def smoke(self) -> Config:
        learner = self.learner.model_copy(update={"batch_size": min(self.learner.batch_size, 8)})
        env = self.env.model_copy(update={"rounds_per_game": min(self.env.rounds_per_game, 3)})
        return self.model_copy(update={"episodes": min(self.episodes, 3), "checkpoint_every": 1,
                                       "plot_every": 2, "eval_episodes": 1, "env": env,
                                       "learner": learner})


@dataclass
class EpisodeResult:
    """What one population's training episode produced, for its run's logs."""

    metrics: dict[str, float]  # coop/* without the scope
    returns: np.ndarray  # (N,) each agent's total reward
    losses: dict[str, float]  # mean update loss per decision (decisions that learned)
    epsilon: dict[str, float]  # mean exploration per decision
    updates: int  # gradient updates so far, all networks
    selections: np.ndarray  # (N, N) chooser x chosen
    punishments: np.ndarray  # (N, N) punisher x victim


def episode_results(core: PunishmentCore, learner: IndependentDQN,
                    losses: list[dict[str, list[float]]]) -> list[EpisodeResult]:
    """What each population of ``core`` (one or many, as ``learner``'s) produced in its episode, for the
    run logs; ``losses[p]``: population ``p``'s update losses per decision."""
    metrics, returns, selections = core.episode_metrics(), core.episode_returns(), core.selections()
    per_pop = learner.rows_per_population
    return [EpisodeResult(
        metrics={name: float(metrics[name][p]) for name in METRIC_NAMES}, returns=returns[p],
        losses={d: float(np.mean(v)) for d, v in losses[p].items() if v},
        epsilon={d: learner.mean_epsilon(d, p) for d in learner.decisions},
        updates=int(learner.updates[p * per_pop:(p + 1) * per_pop].sum()),
        selections=selections[p], punishments=core.punishments[p].copy()) for p in range(len(losses))]


class Population:
    """The env, learners, replay and collector of one run through the PettingZoo API: the centipede's
    trainer (the IPD trains on :class:`~aligngym.agents.marl.batched.SeedBatch`, with the same
    transitions) and every game's evaluation, scripted partners included."""

    n_pops = 1

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config = config
        # independent streams for the game, the learners, the replay sampling and evaluation games
        env_seed, learner_seed, replay_seed, eval_seed = map(
            int, np.random.SeedSequence(config.seed).generate_state(4))
        self.env_seed, self.eval_seed = env_seed, eval_seed
        self.env = punishment_v0.parallel_env(rules=config.env)
        self.learner = IndependentDQN(config.learner, config.env, self.env.feature_size,
                                      learner_seed, device)
        rules, lc = config.env, config.learner
        self.replay = PopulationReplay({d: getattr(lc, d).buffer_size for d in rules.decisions},
                                       rules.n_agents, self.env.feature_size, [replay_seed])
        self.collector = PopulationCollector(self.env, self.learner, self.replay,
                                             lc.bootstrap_across_games)
        self.env.core.rng = np.random.default_rng(env_seed)  # as reset(seed=env_seed) seeds it
        self.episode = 0

    def population_state(self, p: int = 0) -> dict[str, Any]:
        return {"step": self.episode, "learner": self.learner.state_dict(),
                "env": self.env.state_dict(), "replay": self.replay.state_dict(),
                "collector": self.collector.state_dict()}

    def load_population_state(self, p: int, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.episode = int(state["step"])
        self.env.load_state_dict(to_numpy(state["env"]))
        self.replay.load_state_dict(to_numpy(state["replay"]))
        self.collector.load_state_dict(to_numpy(state["collector"]))

    def play_episode(self, explore: bool, learn: bool, keep_memory: bool,
                     losses: list[dict[str, list[float]]] | None = None, seed: int | None = None) -> None:
        """One episode (``losses[0][decision]`` collects the update losses); ``seed`` seeds the game."""
        learner, batch = self.learner, self.config.learner.batch_size

        def on_stored(rows: list[int]) -> None:
            ready, sampled = self.replay.sample(rows, batch)
            if len(ready):
                per_row = learner.update(ready, sampled)
                if losses is not None:
                    for row, loss in zip(ready, per_row):
                        losses[0][learner.decisions_of_row(int(row))].append(float(loss))

        self.collector.run_episode(explore=explore, keep_memory=keep_memory, seed=seed,
                                   on_stored=on_stored if learn else None)
        self.episode += 1

    def results(self, losses: list[dict[str, list[float]]]) -> list[EpisodeResult]:
        return episode_results(self.env.core, self.learner, losses)


def train(config: Config, run: Run, state: dict[str, Any] | None) -> None:
    train_seeds([config], [run], [state])


def train_seeds(configs: list[Config], runs: list[Run], states: list[dict[str, Any] | None]) -> None:
    """Train the seeds ``configs`` of one condition, each into its run folder, from its checkpoint's
    state where it has one (all at the same episode): the IPD's together on one
    :class:`~aligngym.agents.marl.batched.SeedBatch`, the centipede's one after another."""
    device = resolve_device(configs[0].device)
    if configs[0].env.game != "ipd":
        for config, run, state in zip(configs, runs, states):
            _train(Population(config, device), [config], [run], [state])
        return
    _train(SeedBatch(configs, device), configs, runs, states)


def _train(trainer: Population | SeedBatch, configs: list[Config], runs: list[Run],
           states: list[dict[str, Any] | None]) -> None:
    config = configs[0]
    steps = {int(s["step"]) if s is not None else 0 for s in states}
    if len(steps) > 1:
        raise CheckpointError(f"seeds trained together must be at the same episode, got {sorted(steps)}")
    for p, state in enumerate(states):
        if state is None:
            continue
        with checkpoint_errors(f"{runs[p].dir}: "):
            trainer.load_population_state(p, state)
    n = config.env.n_agents
    chosen = np.zeros((len(runs), n, n), dtype=np.int64)  # this plot window's chooser x chosen counts
    punished = np.zeros((len(runs), n, n), dtype=np.int64)  # ... and punisher x victim counts
    desc = runs[0].dir.name if len(runs) == 1 else f"{config.agent} x {len(runs)} seeds"
    bar = tqdm(total=config.episodes, initial=trainer.episode, desc=desc, unit="ep",
               disable=not config.show_progress, dynamic_ncols=True)
    try:
        while trainer.episode < config.episodes:
            step = trainer.episode
            trainer.learner.set_episode(step)
            losses: list[dict[str, list[float]]] = [{d: [] for d in trainer.learner.decisions} for _ in runs]
            trainer.play_episode(explore=True, learn=True, keep_memory=config.carry_memory and step > 0,
                                 losses=losses)
            results = trainer.results(losses)
            for p, (cfg, run, res) in enumerate(zip(configs, runs, results)):
                run.log("coop", step, {**res.metrics, **{f"return_player_{i}": float(r)
                                                         for i, r in enumerate(res.returns)}})
                run.log("loss", step, res.losses)
                run.log("train", step, {**{f"epsilon_{d}": e for d, e in res.epsilon.items()},
                                        "gradient_updates": float(res.updates)})
                chosen[p] += res.selections
                punished[p] += res.punishments
                if (step + 1) % cfg.plot_every == 0 or step + 1 == config.episodes:
                    _plot_window(run, cfg, step, chosen[p], punished[p])
                    chosen[p] = punished[p] = 0
                # SIGINT / SIGTERM (run.stopping()): a checkpoint now, keeping every finished episode
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == config.episodes or run.stopping():
                    run.save(trainer.population_state(p))
            bar.update(1)
            bar.set_postfix(coop=f"{np.mean([r.metrics['cooperation_rate'] for r in results]):.2f}",
                            reward=f"{np.mean([r.metrics['mean_reward'] for r in results]):.1f}")
            if runs[0].stopping() and trainer.episode < config.episodes:
                raise runs[0].interrupted(trainer.episode)
    finally:
        bar.close()
    for cfg, run in zip(configs, runs):
        run.writer.flush()
        history = read_curves(run.dir, ("coop/cooperation_rate", "coop/punishment_rate_direct",
                                        "coop/punishment_rate_third_party", "coop/just_punishment_share"))
        fig = curves({k.split("/")[1]: values for k, (_, values) in history.items() if len(values)},
                     "training curves", "rate", window=max(min(cfg.episodes // 20, 100), 1),
                     ylim=(-0.05, 1.05))
        run.figure("coop/curves", fig, cfg.episodes - 1, png="curves.png")


def _plot_window(run: Run, config: Config, step: int, chosen: np.ndarray, punished: np.ndarray) -> None:
    """Heatmaps of the window that ends at ``step`` (also kept as PNG: the latest window)."""
    first = step + 1 - ((step % config.plot_every) + 1)
    window = f"episodes {first}-{step}"
    if config.env.partner_selection:
        run.figure("coop/selection_heatmap", heatmap(chosen, f"partner choices, {window}",
                                                     "chooser", "chosen"), step,
                   png="selection_heatmap.png")
    if config.env.punishing:
        run.figure("coop/punishment_matrix", heatmap(punished, f"punishments, {window}",
                                                     "punisher", "victim"), step,
                   png="punishment_matrix.png")


class BackgroundPolicy:
    """The trained networks play agents ``0 .. focal-1``; scripted bots play the others."""

    def __init__(self, learner: IndependentDQN, rules: GameRules, focal: int, background: str) -> None:
        self.learner, self.focal = learner, focal
        self.bots = BotTeam({i: background for i in range(focal, rules.n_agents)}, rules)

    def row(self, decision: DecisionKind, agent: int) -> int:
        return self.learner.row(decision, agent)

    def act(self, rows: np.ndarray, features: np.ndarray, explore: bool) -> np.ndarray:
        actions = self.learner.act(rows, features, explore)
        for k, row in enumerate(rows):
            agent = int(row) % self.learner.n_agents
            if agent in self.bots:
                actions[k] = self.bots.act(agent, self.learner.decisions_of_row(int(row)), features[k])
        return actions

    def observe(self, infos: dict[str, dict[str, Any]]) -> None:
        self.bots.observe(infos)

    def reset(self) -> None:
        self.bots.reset()


def evaluate(config: Config, state: dict[str, Any], episodes: int, background: str | None = None,
             focal: int | None = None) -> dict[str, Any]:
    """Greedy play of the trained population from a fresh game (its own seed stream). With
    ``background``, only agents ``0 .. focal-1`` are the trained networks and the rest are scripted
    bots of that kind (Melting Pot's focal / background populations)."""
    n = config.env.n_agents
    if background is not None:
        if background not in BOTS:
            raise ConfigError(f"unknown --background '{background}'; choose from {', '.join(sorted(BOTS))}")
        focal = 1 if focal is None else focal
        if not 1 <= focal < n:
            raise ConfigError(f"--focal must be between 1 and {n - 1} (agents that stay trained), got {focal}")
    elif focal is not None:
        raise ConfigError("--focal needs --background (who plays the other agents)")
    pop = Population(config, resolve_device(config.device))
    with checkpoint_errors():
        pop.learner.load_state_dict(state["learner"])
    if background is not None:
        pop.collector.policy = BackgroundPolicy(pop.learner, config.env, focal, background)
    per_episode, focal_returns, background_returns, focal_plays, focal_coops = [], [], [], 0, 0
    # on stderr while it is a terminal (and the run's show_progress allows bars), as the offline agents'
    for k in tqdm(range(episodes), desc=f"evaluating {config.agent} on {config.task}", unit="episode",
                  disable=None if config.show_progress else True, dynamic_ncols=True):
        pop.play_episode(explore=False, learn=False, keep_memory=config.carry_memory and k > 0,
                         seed=pop.eval_seed if k == 0 else None)
        per_episode.append(pop.results([{}])[0].metrics)
        if background is not None:
            core = pop.env.core
            returns = core.episode_returns()[0]
            focal_returns.append(returns[:focal].mean())
            background_returns.append(returns[focal:].mean())
            focal_plays += int(core.agent_counts["agent_plays"][0, :focal].sum())
            focal_coops += int(core.agent_counts["agent_coops"][0, :focal].sum())
    out: dict[str, Any] = {f"eval/{name}": float(np.mean([m[name] for m in per_episode]))
                           for name in METRIC_NAMES}
    out["eval/return"] = out["eval/mean_reward"]
    if background is not None:
        out.update({"eval/focal_return": float(np.mean(focal_returns)),
                    "eval/background_return": float(np.mean(background_returns)),
                    "eval/focal_cooperation_rate": focal_coops / max(focal_plays, 1),
                    "background": background, "focal": focal})
    out["episodes"] = episodes
    return out
