"""Sweep expansion: a sweep written in Hydra's override grammar, composed into typed configs.

With l2reg.config (the schema), the only module that imports hydra or omegaconf. Hydra's Compose
API refuses sweeps, so the overrides are parsed with Hydra's own parser, split into the cartesian
product by its BasicSweeper (and unioned over explicit point sets), and each distinct setting is
composed once. Errors come out as one-line ConfigErrors.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from l2reg.config import Config, ConfigError, default_config_dir, with_seed


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="l2sweep_schema", node=Config)


def expand_and_compose(overrides: list[str], config_dir: Path | None = None,
                       points: list[list[str]] | None = None) -> list[tuple[list[str], Config]]:
    """Expand a sweep written in Hydra's override grammar and compose each point.

    Hydra's Compose API refuses sweeps (hydra#2673), so the overrides are parsed with Hydra's own
    parser and split into the cartesian product by its BasicSweeper (a private module: hydra-core
    is pinned < 1.4 and a test covers it), then each point is composed. Returns (overrides of the
    point, typed Config) pairs, in BasicSweeper's order. Raises ConfigError on any composition or
    type error.

    One Hydra compose per distinct setting: points that differ only in a plain `seed=<int>` share
    the first one's composition with the seed substituted (`_SeedShortcut`), unless the composed
    config reads the seed anywhere else (an interpolation): then, and for every other point, each
    point is composed as it always was. Identical configs, ids and order either way (a test
    compares them with composing every point).

    Point sets (`points`, from `l2sweep run --point`, else the experiment file's `points:`): the
    sweep is the union, in order, of each set's expansion, a set's overrides replacing those of
    the same key from the file's `sweep:` (the command line's own keys win over a set's); a point
    that two sets both produce is kept once.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config_dir = Path(config_dir or default_config_dir()).resolve()
    if not (config_dir / "config.yaml").is_file():
        raise ConfigError(f"no config.yaml in {config_dir}")
    _register_schema()
    GlobalHydra.instance().clear()
    composed_points: list[tuple[list[str], Config]] = []
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())

            def cartesian(items: list[str]) -> list[list[str]]:
                batches = BasicSweeper.split_arguments(parser.parse_overrides(items), None)
                return batches[0] if batches and batches[0] else [[]]  # a new list of new lists

            overrides = list(overrides)
            _refuse_malformed(parser, overrides)
            _refuse_empty_sweeps(parser.parse_overrides(overrides))
            every_point = cartesian(overrides)
            first = compose(config_name="config", overrides=every_point[0])
            user_keys = {parsed.key_or_group for parsed in parser.parse_overrides(overrides)}
            from_file = [f"{key}={values}" for key, values in first.sweep.items() if key not in user_keys]
            _refuse_empty_sweeps(parser.parse_overrides(from_file))
            composed = {tuple(every_point[0]): first}  # the first point, already composed
            if from_file:
                overrides += from_file
                every_point, composed = cartesian(overrides), {}

            def compose_point(point: list[str]):
                done = composed.pop(tuple(point), None)
                return done if done is not None else compose(config_name="config", overrides=point)

            sets = _point_sets(points, first, parser, user_keys)
            # one shortcut per point set: its points, in order, share compositions that differ in seed alone
            groups = _union_of_sets(sets, overrides, parser, user_keys, cartesian) if sets else [every_point]
            for group in groups:
                shortcut = _SeedShortcut(compose_point, OmegaConf.to_object, group)
                composed_points += [(point, shortcut.config(point)) for point in group]
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(_one_line(error)) from error
    finally:
        GlobalHydra.instance().clear()
    return composed_points


def _refuse_malformed(parser, overrides: list[str], point: list[str] | None = None) -> None:
    """Parse each override alone, so the error names the malformed one (and the point set it is in,
    for `point`)."""
    from hydra.errors import OverrideParseException

    for item in overrides:
        try:
            parser.parse_overrides([item])
        except OverrideParseException as error:
            reason = str(error).splitlines()[0]
            if point is not None:
                raise ConfigError(f"malformed override {item!r} in point {' '.join(point)!r}: {reason}") from error
            raise ConfigError(f"malformed override {item!r}: {reason} (Hydra's override grammar: "
                              f"key=value, key=a,b,c, 'key=range(5)', key=glob(*))") from error


def _union_of_sets(sets: list[list[str]], overrides: list[str], parser, user_keys: set[str],
                   cartesian) -> list[list[list[str]]]:
    """The points of each override set, in order: a set's overrides replace those of the same key
    from the sweep (the command line's own keys win over a set's); a point an earlier set already
    produced is left out."""
    seen: set[tuple[str, ...]] = set()
    keyed = {parsed.key_or_group: item for item, parsed in zip(overrides, parser.parse_overrides(overrides))}
    groups = []
    for point_set in sets:
        own = {parsed.key_or_group for parsed in parser.parse_overrides(point_set)}
        combined = [item for key, item in keyed.items() if key not in own or key in user_keys]
        combined += [item for item in point_set if item.split("=", 1)[0].lstrip("+~") not in user_keys]
        expanded = [point for point in cartesian(combined) if tuple(point) not in seen]
        seen.update(tuple(point) for point in expanded)
        groups.append(expanded)
    return groups


def _point_sets(points: list[list[str]] | None, first, parser, user_keys: set[str]) -> list[list[str]]:
    """The override sets of an explicit-points sweep: the command line's (`points`), else those of
    the composed config's `points:` (values written as Hydra override values); each checked as
    the command line's overrides are (malformed, empty sweeps)."""
    if points is None:
        points = [[f"{key}={value}" for key, value in dict(entry).items()] for entry in (first.points or [])]
    sets = []
    for point_set in points:
        if not point_set:
            raise ConfigError("an empty point: give each --point one or more overrides, e.g. --point 'norm=l1'")
        _refuse_malformed(parser, point_set, point=point_set)
        _refuse_empty_sweeps(parser.parse_overrides(point_set))
        sets.append(list(point_set))
    return sets


class _SeedShortcut:
    """Typed configs of sweep points, one Hydra compose per setting (a point less its `seed`).

    A point's overrides are BasicSweeper's `key=value` strings, one per key, at the same position
    in every point. A point whose seed element is a plain integer (`seed=12`, as `range()` and
    comma lists of integers write it, exactly what Hydra composes to that int) reuses the typed
    config of the first point of its setting with the seed substituted (`with_seed`): the
    composition does not depend on the seed's value unless something interpolates it, which
    `_reads_seed_only_at_seed` rules out once per setting by resolving the composed config with
    another seed. Anything else (no seed, `seed=null`, a quoted or float seed, `+seed=...`, a
    setting whose config reads the seed elsewhere, a sweep whose seed takes one value) is composed,
    as every point always was, so errors come from the same point with the same message. Points
    that share a setting share its nested config objects (as dataclasses.replace would): configs
    are never changed in place.
    """

    PLAIN_SEED = re.compile(r"seed=(-?(?:0|[1-9][0-9]*))")
    PROBE = 2_147_483_629  # a seed no sweep point carries: resolving with it shows what reads the seed

    def __init__(self, compose_point, to_object, points: list[list[str]]):
        self._compose, self._to_object = compose_point, to_object
        self._at = self._seed_at(points[0]) if points else None  # every point has its keys at the same places
        # a setting recurs only when the seed takes several values: else compose each point, no probe
        self._recurs = self._at is not None and len({point[self._at] for point in points}) > 1
        self._settings: dict[tuple[str, ...], Any] = {}  # setting -> its typed config, or None: compose each point

    @staticmethod
    def _seed_at(point: list[str]) -> int | None:
        return next((i for i, item in enumerate(point) if item.startswith("seed=")), None)

    def config(self, point: list[str]) -> Any:
        if not self._recurs:
            return self._to_object(self._compose(point))
        at = self._at
        if at >= len(point) or not point[at].startswith("seed="):  # not expected: look again
            at = self._seed_at(point)
        plain = self.PLAIN_SEED.fullmatch(point[at]) if at is not None else None
        setting = tuple(point[:at] + point[at + 1:]) if plain else None
        if plain and self._settings.get(setting) is not None:
            return with_seed(self._settings[setting], int(plain.group(1)))
        node = self._compose(point)
        typed = self._to_object(node)
        if plain and setting not in self._settings:
            seed = int(plain.group(1))
            reusable = (isinstance(typed, Config) and type(typed.seed) is int and typed.seed == seed
                        and self._reads_seed_only_at_seed(node, typed))
            self._settings[setting] = typed if reusable else None
        return typed

    def _reads_seed_only_at_seed(self, node, typed: Config) -> bool:
        """Does the composed config (`node`, before resolution) give `typed` with only the seed
        changed when its seed changes? False when an interpolation reads it (`name: run-${seed}`)."""
        import copy

        from omegaconf import OmegaConf

        try:
            probe = copy.deepcopy(node)
            OmegaConf.update(probe, "seed", self.PROBE, merge=True)
            return self._to_object(probe) == dataclasses.replace(typed, seed=self.PROBE)
        except Exception:  # anything unexpected: compose every point of this setting, as always
            return False


def _refuse_empty_sweeps(parsed) -> None:
    """A sweep with no values (`seed=range(0)`) would make Hydra's sweeper drop every override
    and plan the defaults instead: refuse it, naming it."""
    from hydra.core.override_parser.types import Glob

    for override in parsed:
        if override.is_sweep_override() and not isinstance(override.value(), Glob):
            if next(iter(override.sweep_string_iterator()), None) is None:
                raise ConfigError(f"{override.input_line} is an empty sweep: it has no values, so there is nothing "
                                  f"to run (e.g. 'seed=range(3)' for seeds 0, 1, 2)")


def _one_line(error: Exception) -> str:
    """Hydra/OmegaConf errors span several lines and chain their cause: say it in one line."""
    text = str(error)
    cause = str(error.__cause__ or "")
    unknown = re.search(r"Key '([^']+)' not in '(\w+)'", cause)
    if unknown:
        full_key = re.search(r"full_key: (\S+)", cause)
        key = full_key.group(1) if full_key else unknown.group(1)
        return f"unknown key '{key}': not a field of the config (see `l2sweep run --help` and conf/config.yaml)"
    if "could not be converted" in cause:
        full_key = re.search(r"full_key: (\S+)", cause)
        first = cause.splitlines()[0]
        return f"{full_key.group(1) if full_key else 'a value'}: {first}"
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if missing:
        options = re.findall(r"^\t(\w[\w-]*)$", text.split("Config search path")[0], flags=re.M)
        return f"{missing.group(1)}={missing.group(2)} is unknown: choose one of {', '.join(options)}"
    lines = [line.strip() for line in (text + "\n" + cause).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__
