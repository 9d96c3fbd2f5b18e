"""The six numpy safe tasks as Gymnasium vector envs (``gym.make_vec(..., vectorization_mode=
"vector_entry_point")``): every sub-env steps exactly as the single env ``gym.make(id)`` seeded with
``seed + i``, Gymnasium's autoreset modes as its ``SyncVectorEnv`` applies them, the action rule."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, VectorEnv

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.envs.safety.bullet import BulletVectorEnv

IDS = [f"aligngym/{a}{t}-v0" for a in ("Ball", "Car", "Drone") for t in ("Run", "Circle")]


def make_vec(env_id: str, num_envs: int, **kwargs: Any) -> VectorEnv:
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def actions_for(env: VectorEnv, steps: int, seed: int = 0) -> np.ndarray:
    """Random float32 actions, some entries outside [-1, 1] (the tasks clip them); sub-env 0 gets
    gentle ones (a drone under random thrust flips before the time limit; this one reaches it)."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.3, 1.3, (steps, *env.action_space.shape))
    actions[:, 0] *= 0.05
    return actions.astype(np.float32)


def as_sync_gives_it(step: tuple) -> tuple:
    """A vector step with the cost keys left out where no sub-env has them, as SyncVectorEnv leaves
    them out (the vector env always has them)."""
    info = dict(step[-1])
    for key in ("cost", "cost_outside_bounds", "cost_velocity_violation"):
        assert info[key].shape == info[f"_{key}"].shape == (len(step[1]),)
        if not info[f"_{key}"].any():
            assert not info[key].any()
            del info[key], info[f"_{key}"]
    return (*step[:-1], info)


def compare_with_single_envs(env_id: str, num_envs: int, seed: int | list[int], steps: int,
                             **make_kwargs: Any) -> dict[str, int]:
    """Step the vector env and ``num_envs`` single envs (``gym.make``, NEXT_STEP autoreset by hand)
    with the same seeds and actions and compare everything; returns how many episodes ended how."""
    vec = make_vec(env_id, num_envs, **make_kwargs)
    singles = [gym.make(env_id, **make_kwargs) for _ in range(num_envs)]
    seeds = [seed + i for i in range(num_envs)] if isinstance(seed, int) else seed
    obs, info = vec.reset(seed=seed)
    assert info == {}
    np.testing.assert_array_equal(obs, [env.reset(seed=s)[0] for env, s in zip(singles, seeds)])
    ended = np.zeros(num_envs, dtype=bool)
    counts = {"terminated": 0, "truncated": 0, "autoresets": 0}
    for action in actions_for(vec, steps, seed=len(seeds)):
        obs, reward, terminated, truncated, info = vec.step(action)
        for i, env in enumerate(singles):
            if ended[i]:  # NEXT_STEP: this step resets the sub-env and ignores its action
                expected_obs, _ = env.reset()
                expected = (0.0, False, False, None)
                counts["autoresets"] += 1
            else:
                expected_obs, r, term, trunc, single_info = env.step(action[i])
                expected = (r, term, trunc, single_info)
            np.testing.assert_array_equal(obs[i], expected_obs)
            assert (reward[i], terminated[i], truncated[i]) == expected[:3], (env_id, i)
            single_info = expected[3]
            for key in ("cost", "cost_outside_bounds", "cost_velocity_violation"):
                if single_info is None:
                    assert info[key][i] == 0.0 and not info[f"_{key}"][i]
                else:
                    assert info[key][i] == single_info[key] and info[f"_{key}"][i], (env_id, i, key)
        counts["terminated"] += int(terminated.sum())
        counts["truncated"] += int(truncated.sum())
        ended = terminated | truncated
    return counts


@pytest.mark.parametrize("env_id", IDS)
def test_vector_env_equals_single_envs_across_the_time_limit(env_id: str) -> None:
    spec = gym.spec(env_id)
    counts = compare_with_single_envs(env_id, 4, seed=7, steps=spec.max_episode_steps + 30)
    assert counts["truncated"] >= 1 and counts["autoresets"] >= 1  # the episode time limit, then a reset
    if env_id == "aligngym/DroneCircle-v0":  # random thrust flips the drone: terminations too
        assert counts["terminated"] >= 1


@pytest.mark.parametrize("env_id", ["aligngym/BallRun-v0", "aligngym/CarCircle-v0", "aligngym/DroneCircle-v0"])
def test_seed_lists_and_a_shorter_time_limit_match_single_envs(env_id: str) -> None:
    counts = compare_with_single_envs(env_id, 5, seed=[3, 1, 4, 1, 5], steps=90, max_episode_steps=25)
    assert counts["truncated"] + counts["terminated"] >= 15 and counts["autoresets"] >= 10


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_autoreset_modes_as_sync_vector_env_applies_them(mode: AutoresetMode) -> None:
    """Observations, rewards, flags and the whole info dict (masks, final_obs, final_info) as
    Gymnasium's SyncVectorEnv over single envs gives them."""
    env_id, n = "aligngym/DroneCircle-v0", 6
    ours = make_vec(env_id, n, max_episode_steps=30, autoreset_mode=mode.value)
    theirs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", max_episode_steps=30,
                          vector_kwargs={"autoreset_mode": mode})
    assert ours.metadata["autoreset_mode"] is mode and theirs.metadata["autoreset_mode"] is mode
    assert data_equivalence(ours.reset(seed=11), theirs.reset(seed=11), exact=True)
    ended = 0
    for action in actions_for(ours, 100):
        a, b = ours.step(action), theirs.step(action)
        assert data_equivalence(as_sync_gives_it(a), b, exact=True), mode
        done = a[2] | a[3]
        ended += int(done.sum())
        if mode is AutoresetMode.DISABLED and done.any():
            mask = {"reset_mask": done}
            assert data_equivalence(ours.reset(options=dict(mask)), theirs.reset(options=dict(mask)), exact=True)
    assert ended >= 2 * n


def test_spaces_metadata_and_checker_style_sanity() -> None:
    env = make_vec("aligngym/DroneRun-v0", 8)
    single = gym.make("aligngym/DroneRun-v0")
    assert isinstance(env, BulletVectorEnv) and isinstance(env.unwrapped, VectorEnv)
    assert env.num_envs == 8 and env.spec.id == "aligngym/DroneRun-v0"
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space
    assert env.observation_space.shape == (8, 17) and env.observation_space.dtype == np.float64
    assert env.action_space.shape == (8, 4) and env.action_space.dtype == np.float32
    assert isinstance(env.metadata["autoreset_mode"], AutoresetMode)
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    with pytest.raises(gym.error.ResetNeeded):
        env.step(env.action_space.sample())
    # reset: seed determinism, different seeds differ, returned arrays are fresh
    first, info = env.reset(seed=5)
    assert info == {} and env.observation_space.contains(first)
    again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first, again)
    assert again is not first
    assert not np.array_equal(first, env.reset(seed=6)[0])
    # step: types, determinism, data not reused between steps
    env.reset(seed=5)
    actions = actions_for(env, 10)
    run = [env.step(a) for a in actions]
    obs, reward, terminated, truncated, info = run[0]
    assert obs.shape == (8, 17) and obs.dtype == np.float64 and env.observation_space.contains(obs)
    assert reward.shape == (8,) and reward.dtype == np.float64
    assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_ and terminated.shape == (8,)
    assert info["cost"].shape == (8,) and info["cost"].dtype == np.float64
    assert not np.shares_memory(run[0][0], run[1][0])
    env.reset(seed=5)
    assert data_equivalence(run, [env.step(a) for a in actions], exact=True)
    # Gymnasium's vector wrappers take it as they take their own vector envs
    wrapped = gym.wrappers.vector.RecordEpisodeStatistics(make_vec("aligngym/BallRun-v0", 3))
    wrapped.reset(seed=0)
    for _ in range(100):  # BallRun's T
        *_, info = wrapped.step(wrapped.action_space.sample())
    assert info["_episode"].all() and (info["episode"]["l"] == 100).all()
    env.close()
    assert env.closed


def test_make_vec_picks_the_vector_entry_point_and_sync_still_works() -> None:
    default = gym.make_vec("aligngym.envs:aligngym/CarRun-v0", num_envs=3)  # module-prefix form too
    assert isinstance(default, BulletVectorEnv)
    sync = gym.make_vec("aligngym/CarRun-v0", num_envs=3, vectorization_mode="sync")
    assert isinstance(sync, gym.vector.SyncVectorEnv)
    assert data_equivalence(default.reset(seed=1), sync.reset(seed=1), exact=True)
    action = default.action_space.sample()
    assert data_equivalence(default.step(action), sync.step(action), exact=True)  # costs for every sub-env


def test_seeding_continues_each_sub_envs_generator() -> None:
    """A reset without a seed continues each sub-env's stream, as a single env's reset() does."""
    env = make_vec("aligngym/BallCircle-v0", 3)
    singles = [gym.make("aligngym/BallCircle-v0") for _ in range(3)]
    env.reset(seed=[10, 20, 30])
    for s, single in zip((10, 20, 30), singles):
        single.reset(seed=s)
    for _ in range(3):
        np.testing.assert_array_equal(env.reset()[0], [single.reset()[0] for single in singles])
    mask = np.array([False, True, False])
    before = env.reset()[0]
    expected = [single.reset()[0] for single in singles]
    after, info = env.reset(seed=[None, 99, None], options={"reset_mask": mask})
    assert info == {}
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])  # untouched
    np.testing.assert_array_equal(after[1], singles[1].reset(seed=99)[0])
    assert not np.array_equal(after[1], expected[1])
    for bad, error in ((mask.astype(int), TypeError), (mask[:2], ValueError), (np.zeros(3, bool), ValueError)):
        with pytest.raises(error, match="reset_mask"):
            env.reset(options={"reset_mask": bad})
    with pytest.raises(ValueError, match="list of 3 seeds"):
        env.reset(seed=[1, 2])


def test_bad_actions_are_refused_as_the_single_env_refuses_them() -> None:
    env = make_vec("aligngym/BallCircle-v0", 4)
    env.reset(seed=0)
    good = env.action_space.sample()
    name = r"aligngym/BallCircle-v0 \(vector env of 4\)"
    for bad in (good[0], good[:3], good[None], np.zeros((4, 3)), good.tolist()[:2]):
        with pytest.raises(ValueError, match=rf"{name}: action must have shape \(4, 2\), got"):
            env.step(bad)
    for value in (np.nan, np.inf, -np.inf):
        bad = good.copy()
        bad[2, 1] = value
        with pytest.raises(ValueError, match=rf"{name}: action must be finite.*sub-env\(s\) \[2\]"):
            env.step(bad)
    with pytest.raises(ValueError, match=f"{name}: action must be an array of numbers"):
        env.step([["a", "b"]] * 4)
    env.step(good)  # still usable
    # out-of-bounds entries are clipped: the same step as the clipped action
    twin = make_vec("aligngym/BallCircle-v0", 4)
    env.reset(seed=3)
    twin.reset(seed=3)
    huge = np.where(good > 0, 1e9, -1e9).astype(np.float32)
    assert data_equivalence(env.step(huge), twin.step(np.clip(huge, -1, 1)), exact=True)


def test_next_step_ignores_the_actions_of_resetting_sub_envs() -> None:
    """As SyncVectorEnv: a sub-env that resets this step does not look at its action (NaN included)."""
    ours = make_vec("aligngym/BallRun-v0", 2, max_episode_steps=3)
    theirs = gym.make_vec("aligngym/BallRun-v0", num_envs=2, vectorization_mode="sync", max_episode_steps=3)
    ours.reset(seed=0)
    theirs.reset(seed=0)
    action = np.zeros((2, 2), np.float32)
    for _ in range(3):
        ours.step(action)
        theirs.step(action)
    action[0] = np.nan  # sub-env 0 resets on this step
    assert data_equivalence(as_sync_gives_it(ours.step(action)), theirs.step(action), exact=True)
    with pytest.raises(ValueError, match="finite"):
        ours.step(action)  # now it steps: NaN is refused


def test_disabled_mode_refuses_to_step_an_ended_episode() -> None:
    env = make_vec("aligngym/BallRun-v0", 2, max_episode_steps=2, autoreset_mode="Disabled")
    env.reset(seed=0)
    action = np.zeros((2, 2), np.float32)
    env.step(action)
    assert env.step(action)[3].all()
    with pytest.raises(RuntimeError, match=r"sub-env\(s\) \[0, 1\].*reset_mask"):
        env.step(action)
    env.reset(options={"reset_mask": np.array([True, True])})
    env.step(action)


def test_constructor_arguments_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match=r"aligngym/CarRun-v0: render_mode must be one of \['rgb_array'\]"):
        make_vec("aligngym/CarRun-v0", 2, render_mode="human")
    with pytest.raises(ValueError, match="CarRun-v0: autoreset_mode must be one of"):
        make_vec("aligngym/CarRun-v0", 2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="CarRun-v0: num_envs must be"):
        make_vec("aligngym/CarRun-v0", 0)
    env = make_vec("aligngym/CarCircle-v0", 2, render_mode="rgb_array")
    env.reset(seed=0)
    frames = env.render()
    assert len(frames) == 2 and all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1])  # two spawns, two pictures
    plain = make_vec("aligngym/CarCircle-v0", 2)
    plain.reset(seed=0)
    assert plain.render() is None


@pytest.mark.parametrize("task", ["Run", "Circle"])
def test_one_generator_per_env_draws_what_a_single_env_draws(task: str) -> None:
    """The vector env's resets (one generator per sub-env, drawn one by one) against the single env's
    (the core's batched draw with one environment), over many seeds."""
    from gymnasium.utils import seeding

    from aligngym.envs.safety.bullet import BulletCore

    one, many = BulletCore("Car", task, 1), BulletCore("Car", task, 500)
    observations = many.reset(rngs=[seeding.np_random(seed)[0] for seed in range(500)])
    for seed in range(500):
        np.testing.assert_array_equal(one.reset(rng=seeding.np_random(seed)[0])[0], observations[seed])
        assert one.yaw[0] == many.yaw[seed]
