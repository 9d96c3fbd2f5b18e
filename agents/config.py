"""Run configs: YAML files validated into typed pydantic models, with readable errors.

Every agent module defines a ``Config`` subclass of :class:`RunConfig` (extra keys forbidden) and is
listed in :data:`AGENTS`; its defaults are the agent's paper settings, so a file holds only what
differs. :func:`load_config` takes a YAML file or the name of a bundled config (``fisor/cpu``,
``quickstart``: the files of the repository's ``configs/``, shipped inside the package as
``aligngym.configs``), reads it with ``yaml.safe_load`` and refuses a key given twice, follows its
``extends:`` chain (a file it builds on, resolved relative to the file; keys of the file win, sections
merge key by key), applies ``--set key.sub=value`` overrides, picks the agent's class from the
``agent`` key and validates. Any problem raises :class:`ConfigError` naming the file, the key, what
was expected and, for a typo, the nearest valid key; nothing runs before the whole config is valid.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from aligngym.envs.checks import loose_scalars, model_at

# agent name -> module providing Config, train(config, run, checkpoint) and evaluate(...)
AGENTS: dict[str, str] = {
    "independent_dqn": "aligngym.agents.marl.population",
    "fisor": "aligngym.agents.fisor",
    "bc_all": "aligngym.agents.baselines.bc",
    "bc_safe": "aligngym.agents.baselines.bc",
    "bcq_lag": "aligngym.agents.baselines.bcq_lag",
    "iql": "aligngym.agents.baselines.iql",
    "cql": "aligngym.agents.baselines.cql",
    "a2pr": "aligngym.agents.a2pr",
    "td3bc": "aligngym.agents.baselines.td3bc",
    "doc": "aligngym.agents.doc",
    "dt": "aligngym.agents.baselines.dt",
    "barfi": "aligngym.agents.barfi",
    "reinforce": "aligngym.agents.baselines.reinforce",
}


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to change."""


class AlignGymWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI shows it in one line)."""


class RunConfig(BaseModel):
    """Fields every run has. Agent configs subclass this and add their own sections."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    hparam_metrics: ClassVar[tuple[str, ...]] = ("eval/return",)  # columns of TensorBoard's hparams table
    length_key: ClassVar[str] = "episodes"  # the field that says how long the run is
    # whether the scores logged at a checkpoint's own step belong to it (logged before it is saved:
    # offline agents log step s after s updates), so a resumed run keeps them
    logs_checkpoint_step: ClassVar[bool] = False

    agent: str  # which agent trains (a key of AGENTS)
    task: str  # the environment id
    seed: int = Field(0, ge=0, le=2**32 - 1)  # seeds the env, the networks and the replay sampling (numpy: < 2^32)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when present
    run_root: str = "runs"  # run folders are created under this directory
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: the agent's measured choice)
    keep_checkpoints: int = Field(2, ge=1)  # checkpoints kept in the run folder: the latest and the ones before
    _source: str = PrivateAttr("")  # the file (and overrides) the config was read from, for error messages

    # torch CPU threads when ``threads`` is None: one for every agent so far (benchmarks/threads.py: a
    # second thread is 1.5-1.75x faster on an idle 2-core machine, 2-4.5x slower on a busy one)
    default_threads: ClassVar[int] = 1

    def smoke(self) -> RunConfig:
        """A copy shrunk to run end to end in seconds (``--smoke``)."""
        return self

    def preflight(self) -> None:
        """Refuse to start (before a run folder exists) when an input the run needs is missing."""


def agent_module(name: Any) -> ModuleType:
    if not isinstance(name, str) or name not in AGENTS:
        hint = difflib.get_close_matches(str(name), AGENTS, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"unknown agent '{name}'{extra}; known agents: {', '.join(sorted(AGENTS))}")
    return importlib.import_module(AGENTS[name])


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is a value, not a section")
        node = child
    if isinstance(node.get(keys[-1]), dict) and isinstance(value, dict):
        # replacing a whole section would silently drop every key of it the override does not name
        raise ConfigError(f"--set {dotted}: '{dotted}' is a section; set its keys one at a time "
                          f"(--set {dotted}.KEY=VALUE)")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key.sub=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse value '{raw}': {err}") from None
    return key.strip(), value


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(map(str, loc)) or "(top level)"
        if e["type"] == "extra_forbidden":
            owner = model_at(model, loc[:-1])
            valid = list(owner.model_fields) if owner else []
            hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            msg = f"unknown key '{key}'"
            if hint:
                msg += f" (did you mean '{'.'.join(map(str, loc[:-1] + (hint[0],)))}'?)"
            elif valid:
                msg += f"; valid keys here: {', '.join(valid)}"
        elif e["type"] == "missing":
            msg = f"missing required key '{key}'"
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = f"{key}: {e['msg']}{shown}"
        lines.append(f"{source}: {msg}")
    return "\n".join(lines)


def validate(data: dict[str, Any], source: str) -> RunConfig:
    """Validate a config dict; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a mapping of keys to values, got {type(data).__name__}")
    if "agent" not in data:
        raise ConfigError(f"{source}: missing required key 'agent' (one of: {', '.join(sorted(AGENTS))})")
    try:
        module = agent_module(data["agent"])
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    cls: type[RunConfig] = module.Config
    loose = loose_scalars(cls, data)
    if loose:
        raise ConfigError("\n".join(f"{source}: {line}" for line in loose))
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, source)) from None


def _repeated_key(text: str) -> str | None:
    """The first key a mapping of the YAML ``text`` names twice, as a message naming both lines; None
    when there is none. PyYAML keeps the last one without a word (a doubled ``steps:`` would silently
    be the other experiment). Reads the parser's events only: nothing is constructed."""
    open_nodes: list[dict[str, Any]] = []  # per open mapping / sequence: its keys so far, and whether a key is next

    def finished() -> None:  # a node ended inside the innermost open mapping: key and value alternate
        if open_nodes and open_nodes[-1]["keys"] is not None:
            open_nodes[-1]["at_key"] = not open_nodes[-1]["at_key"]

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            open_nodes.append({"keys": {} if isinstance(event, yaml.MappingStartEvent) else None, "at_key": True})
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            open_nodes.pop()
            finished()
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            node = open_nodes[-1] if open_nodes else None
            if node is not None and node["keys"] is not None and node["at_key"] and isinstance(event, yaml.ScalarEvent):
                line = event.start_mark.line + 1
                if event.value in node["keys"]:
                    return f"key '{event.value}' is given twice (lines {node['keys'][event.value]} and {line}); keep one"
                node["keys"][event.value] = line
            finished()
    return None


def bundled_configs() -> Path:
    """The folder of the configs shipped with the package (in a source checkout: its ``configs/``)."""
    import aligngym.configs

    return Path(aligngym.configs.__file__).parent


def config_names() -> list[str]:
    """The bundled configs by name (``fisor/cpu``: ``aligngym train fisor/cpu``)."""
    root = bundled_configs()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_config(name: str | Path) -> Path:
    """A config file: ``name`` itself when it exists, else the bundled config of that name
    (``fisor/cpu``, ``fisor/cpu.yaml``, ``quickstart``); else a ConfigError with the nearest names."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    text = str(name).removeprefix("configs/")
    root = bundled_configs()
    for candidate in (root / text, root / f"{text}.yaml"):
        if candidate.is_file():
            return candidate
    names = config_names()
    hint = difflib.get_close_matches(text.removesuffix(".yaml"), names, n=3)
    extra = f" (did you mean {' or '.join(hint)}?)" if hint else ""
    raise ConfigError(f"config file not found: {name}: neither a file nor a bundled config{extra}; "
                      f"aligngym list shows the bundled ones")


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give one of its config files (aligngym list shows them)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        repeated = _repeated_key(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is YAML text)") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    if repeated is not None:
        raise ConfigError(f"{path}: {repeated}")
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: sections merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _compose(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """The file's keys over those of the files it ``extends`` (recursively); also the chain of files."""
    data = _read_yaml(path)
    chain = (*chain, path.resolve())
    if "extends" not in data:
        return data, chain
    parent = data.pop("extends")
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends: expected the path of a config file to build on "
                          f"(relative to {path.parent}), got {parent!r}")
    base = (path.parent / Path(parent).expanduser()).resolve()
    if base in chain:
        loop = " -> ".join(str(p) for p in (*chain[chain.index(base):], base))
        raise ConfigError(f"{path}: extends {parent}: a cycle ({loop})")
    if not base.is_file():
        raise ConfigError(f"{path}: extends {parent}: no such file {base}")
    inherited, chain = _compose(base, chain)
    return _merge(inherited, data), chain


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), smoke: bool = False) -> RunConfig:
    """Read (following ``extends``), override and validate a YAML config file or a bundled config
    named like ``fisor/cpu`` (``smoke``: then shrunk by its ``smoke()``)."""
    path = find_config(path)
    data, chain = _compose(path)
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] == "extends":
            raise ConfigError(f"--set {text}: extends is read from the file only")
        _set_dotted(data, key, value)
    source = str(path)
    if len(chain) > 1:
        source += f" (extending {', '.join(p.name for p in chain[1:])})"
    if overrides:
        source += f" with --set {' '.join(overrides)}"
    config = validate(data, source)
    config._source = source
    return config.smoke() if smoke else config


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what a run folder's config.yaml holds)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
