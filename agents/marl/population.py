"""Population training of independent DQN learners on the punishment/reputation game.

The loop is the paper's (Dasgupta & Musolesi; reference section 1.3): episodes of the game, in which
every network that stored a transition does one gradient update, with reputations and last moves
carried from one episode to the next (``carry_memory``). Per episode it logs the ``coop/*`` metrics,
the learners' losses (``loss/<decision>``) and exploration (``train/epsilon_<decision>``); every
``plot_every`` episodes the heatmaps of who chose and who punished whom (TensorBoard images and PNG
files), and at the end the training curves; and it writes a checkpoint every ``checkpoint_every``
episodes from which training resumes exactly. ``evaluate`` plays the trained population greedily,
optionally with scripted partners in place of all but ``focal`` agents.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from aligngym.agents.config import ConfigError, RunConfig
from aligngym.agents.marl.collector import PopulationCollector, PopulationReplay
from aligngym.agents.marl.dqn import IndependentDQN, IndependentDQNConfig
from aligngym.agents.marl.plots import curves, heatmap
from aligngym.agents.train import CheckpointError, Run, read_curves, resolve_device, to_numpy
from aligngym.envs.cooperation import punishment_v0
from aligngym.envs.cooperation.core import METRIC_NAMES
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

    def smoke(self) -> Config:
        learner = self.learner.model_copy(update={"batch_size": min(self.learner.batch_size, 8)})
        env = self.env.model_copy(update={"rounds_per_game": min(self.env.rounds_per_game, 3)})
        return self.model_copy(update={"episodes": min(self.episodes, 3), "checkpoint_every": 1,
                                       "plot_every": 2, "eval_episodes": 1, "env": env,
                                       "learner": learner})


class Population:
    """The env, learners, replay and collector of one run, with their joint state."""

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
        sizes = {self.learner.row(d, i): getattr(lc, d).buffer_size
                 for d in rules.decisions for i in range(rules.n_agents)}
        self.replay = PopulationReplay(sizes, replay_seed)
        self.collector = PopulationCollector(self.env, self.learner, self.replay,
                                             lc.bootstrap_across_games)
        self.episode = 0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.episode, "learner": self.learner.state_dict(),
                "env": self.env.state_dict(), "replay": self.replay.state_dict(),
                "collector": self.collector.state_dict()}

    def load_state_dict(self, state: dict[str, Any], learner_only: bool = False) -> None:
        """Restore from a checkpoint's state; a state that does not fit this config is reported
        as a ``CheckpointError``."""
        try:
            self.learner.load_state_dict(state["learner"])
            if learner_only:
                return
            self.episode = int(state["step"])
            self.env.load_state_dict(to_numpy(state["env"]))
            self.replay.load_state_dict(to_numpy(state["replay"]))
            self.collector.load_state_dict(to_numpy(state["collector"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"the checkpoint does not fit this config or is incomplete "
                                  f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None

    def play_episode(self, explore: bool, learn: bool, seed: int | None,
                     losses: dict[str, list[float]] | None = None) -> dict[str, float]:
        """One episode; returns its metrics (``coop/*`` names without the scope)."""
        learner, batch = self.learner, self.config.learner.batch_size

        def on_stored(rows: list[int]) -> None:
            ready = self.replay.ready(rows, batch)
            if len(ready):
                per_row = learner.update(ready, self.replay.sample(ready, batch))
                if losses is not None:
                    for row, loss in zip(ready, per_row):
                        losses[learner.decisions_of_row(int(row))].append(float(loss))

        keep = self.config.carry_memory and self.episode > 0
        self.collector.run_episode(explore=explore, keep_memory=keep, seed=seed,
                                   on_stored=on_stored if learn else None)
        metrics = self.env.core.episode_metrics()
        return {name: float(metrics[name][0]) for name in METRIC_NAMES}


def train(config: Config, run: Run, state: dict[str, Any] | None) -> None:
    device = resolve_device(config.device)
    pop = Population(config, device)
    if state is not None:
        pop.load_state_dict(state)
    n = config.env.n_agents
    chosen = np.zeros((n, n), dtype=np.int64)  # this plot window's chooser x chosen counts
    punished = np.zeros((n, n), dtype=np.int64)  # ... and punisher x victim counts
    bar = tqdm(total=config.episodes, initial=pop.episode, desc=run.dir.name, unit="ep",
               disable=not config.show_progress, dynamic_ncols=True)
    try:
        while pop.episode < config.episodes:
            pop.learner.set_episode(pop.episode)
            losses: dict[str, list[float]] = {d: [] for d in pop.learner.decisions}
            seed = pop.env_seed if pop.episode == 0 else None
            metrics = pop.play_episode(explore=True, learn=True, seed=seed, losses=losses)
            step = pop.episode
            pop.episode += 1
            returns = pop.env.core.episode_returns()[0]
            run.log("coop", step, {**metrics, **{f"return_player_{i}": float(r) for i, r in enumerate(returns)}})
            run.log("loss", step, {d: float(np.mean(v)) for d, v in losses.items() if v})
            train_stats = {f"epsilon_{d}": pop.learner.mean_epsilon(d) for d in pop.learner.decisions}
            train_stats["gradient_updates"] = float(pop.learner.updates.sum())
            run.log("train", step, train_stats)
            chosen += pop.env.core.selections()[0]
            punished += pop.env.core.punishments[0]
            if pop.episode % config.plot_every == 0 or pop.episode == config.episodes:
                _plot_window(run, config, step, chosen, punished)
                chosen[:] = punished[:] = 0
            bar.update(1)
            bar.set_postfix(coop=f"{metrics['cooperation_rate']:.2f}",
                            reward=f"{metrics['mean_reward']:.1f}")
            # SIGINT / SIGTERM (run.stopping()): a checkpoint now, keeping every finished episode
            if pop.episode % config.checkpoint_every == 0 or pop.episode == config.episodes or run.stopping():
                run.save(pop.state_dict())
            if run.stopping() and pop.episode < config.episodes:
                raise run.interrupted(pop.episode)
    finally:
        bar.close()
    run.writer.flush()
    history = read_curves(run.dir, ("coop/cooperation_rate", "coop/punishment_rate_direct",
                                    "coop/punishment_rate_third_party", "coop/just_punishment_share"))
    fig = curves({k.split("/")[1]: values for k, (_, values) in history.items() if len(values)},
                 "training curves", "rate", window=max(min(config.episodes // 20, 100), 1),
                 ylim=(-0.05, 1.05))
    run.figure("coop/curves", fig, config.episodes - 1, png="curves.png")


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
    pop.load_state_dict(state, learner_only=True)
    if background is not None:
        pop.collector.policy = BackgroundPolicy(pop.learner, config.env, focal, background)
    per_episode, focal_returns, background_returns, focal_plays, focal_coops = [], [], [], 0, 0
    # on stderr while it is a terminal (and the run's show_progress allows bars), as the offline agents'
    for k in tqdm(range(episodes), desc=f"evaluating {config.agent} on {config.task}", unit="episode",
                  disable=None if config.show_progress else True, dynamic_ncols=True):
        per_episode.append(pop.play_episode(explore=False, learn=False,
                                            seed=pop.eval_seed if k == 0 else None))
        pop.episode += 1
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
