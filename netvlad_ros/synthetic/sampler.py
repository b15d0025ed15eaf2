"""Many synthetic frames over many worlds and conditions, lazily: the default model's fitting set.

Why: the default NetVLAD head (its centres, maybe a PCA whitening) is fitted on synthetic
frames, since the project ships no image data (issue 10, item 5). Fitted on one world
under one condition, the centres describe only that; fitted on thousands of frames over
many seeds, outdoor streets and indoor corridors, day, dusk and night, clear, overcast,
rain, fog and snow, and the four seasons, they describe what the node will meet.

:func:`fitting_frames` is an iterator: one world is alive at a time, frames are rendered
on demand, so thousands of frames never sit in memory (without depth a 640x480 frame is
0.9 MB). Everything is deterministic from the seeds. The mix (:data:`OUTDOOR_MIX`,
:data:`INDOOR_MIX`) is documented in docs/synthetic_world.md ("Fitting frames").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from .conditions import SEASONS, Condition
from .frames import Frame
from .world import SyntheticWorld, WorldConfig

__all__ = ["DEFAULT_FITTING_SEEDS", "INDOOR_MIX", "OUTDOOR_MIX", "fitting_frames"]

#: Seeds of the fitting worlds: none of them is a seed the tests or the demo use.
DEFAULT_FITTING_SEEDS: tuple[int, ...] = tuple(range(90210, 90226))

#: Probabilities of the outdoor conditions (time of day and weather independent; the
#: season uniform, except that snow falls only in winter).
OUTDOOR_MIX: dict[str, dict[str, float]] = {
    "time_of_day": {"day": 0.5, "dusk": 0.2, "night": 0.3},
    "weather": {"clear": 0.3, "overcast": 0.25, "rain": 0.15, "fog": 0.15, "snow": 0.15},
}
#: Indoors only the time of day matters (the lights).
INDOOR_MIX: dict[str, dict[str, float]] = {"time_of_day": {"day": 0.6, "dusk": 0.15, "night": 0.25}}


def _choice(rng: np.random.Generator, table: dict[str, float]) -> str:
    names = list(table)
    p = np.array([table[k] for k in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _condition(rng: np.random.Generator, indoor: bool) -> Condition:
    if indoor:
        return Condition(time_of_day=_choice(rng, INDOOR_MIX["time_of_day"]))
    tod = _choice(rng, OUTDOOR_MIX["time_of_day"])
    weather = _choice(rng, OUTDOOR_MIX["weather"])
    season = "winter" if weather == "snow" else SEASONS[int(rng.integers(len(SEASONS)))]
    return Condition(tod, weather, season)


def fitting_frames(
    n: int,
    seeds: Sequence[int] = DEFAULT_FITTING_SEEDS,
    *,
    width: int = 640,
    height: int = 480,
    indoor_fraction: float = 0.3,
    frames_per_condition: int = 8,
    depth: bool = False,
) -> Iterator[Frame]:
    """Yield ``n`` frames, spread evenly over one world per seed in ``seeds``.

    Each seed's world is a 2x2-block street (trees every 9-16 m, lamps every 20-30 m) or,
    for ``floor(indoor_fraction * len(seeds))`` of them spread evenly along ``seeds`` (the
    seed at position i when ``floor((i + 1) f) > floor(i f)``), a 2x2 corridor building. Its frames come in runs of ``frames_per_condition`` consecutive frames of
    one condition (drawn from :data:`OUTDOOR_MIX` / :data:`INDOOR_MIX`), each run a
    ``query``-style drive (lateral weave, heading jitter, clutter) starting at a random
    place on the route, 4 m (streets) or 1.5 m (corridors) between frames. ``Frame.condition``
    and ``Frame.scene`` say what each frame shows. ``depth`` also renders depth.
    """
    if n < 0:
        raise ValueError(f"fitting_frames: n must be >= 0, got {n!r}")
    if not seeds:
        raise ValueError("fitting_frames: seeds must not be empty")
    if not 0.0 <= indoor_fraction <= 1.0:
        raise ValueError(f"fitting_frames: indoor_fraction must be in [0, 1], got {indoor_fraction!r}")
    if frames_per_condition < 1:
        raise ValueError(f"fitting_frames: frames_per_condition must be >= 1, got {frames_per_condition!r}")
    per_world = math.ceil(n / len(seeds)) if n else 0
    produced = 0
    for pos, seed in enumerate(seeds):
        if produced >= n:
            return
        rng = np.random.default_rng([int(seed), 8088])
        indoor = math.floor((pos + 1) * indoor_fraction) > math.floor(pos * indoor_fraction)  # spread evenly
        if indoor:
            config = WorldConfig.corridors(seed=int(seed), width=width, height=height, blocks_x=2, blocks_y=2)
            spacing = 1.5
        else:
            config = WorldConfig(
                seed=int(seed), width=width, height=height, blocks_x=2, blocks_y=2,
                tree_spacing_m=float(rng.uniform(9.0, 16.0)), lamp_spacing_m=float(rng.uniform(20.0, 30.0)),
            )  # fmt: skip
            spacing = 4.0
        world = SyntheticWorld(config)
        route = world.route_length_m
        todo = min(per_world, n - produced)
        while todo > 0:
            k = min(frames_per_condition, todo)
            cond = _condition(rng, indoor)
            start = float(rng.uniform(0.0, max(0.0, route - (k + 1) * spacing - 2.0)))
            frames = world.traversal(
                "query", spacing_m=spacing, max_frames=k, seed=int(rng.integers(1 << 30)),
                condition=cond, depth=depth, start_m=start,
            )  # fmt: skip
            yield from frames
            produced += len(frames)
            todo -= len(frames)
            if not frames:
                break
