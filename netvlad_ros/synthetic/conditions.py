"""What a synthetic frame looks like apart from where it is: :class:`Appearance` (the
renderer's low-level parameters) and :class:`Condition` (time of day, weather, season:
the vocabulary a traversal is described in), and the seeded map from one to the other.

Why: place recognition must survive the same place seen on another day, at night, in
fog, rain or snow, or in another season. A query traversal can be rendered under a
different condition from the mapping traversal (cross-day, day -> night, summer ->
winter), and the default model's refit samples many conditions
(:func:`.sampler.fitting_frames`). Everything is deterministic from seeds.

No imports from the renderer: :mod:`.world` and :mod:`.frames` import this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SEASONS",
    "TIMES_OF_DAY",
    "WEATHERS",
    "Appearance",
    "Condition",
    "condition_appearance",
]

TIMES_OF_DAY = ("day", "dusk", "night")
WEATHERS = ("clear", "overcast", "rain", "fog", "snow")
SEASONS = ("spring", "summer", "autumn", "winter")


@dataclass(frozen=True)
class Condition:
    """The conditions of one traversal: ``time_of_day`` (:data:`TIMES_OF_DAY`), ``weather``
    (:data:`WEATHERS`) and ``season`` (:data:`SEASONS`; it changes the street trees).

    The default, ``day/overcast/summer``, is what the mapping traversal has always been
    rendered under. Indoor (corridor) worlds use only the time of day (the lights);
    weather and season do not reach indoors.
    """

    time_of_day: str = "day"
    weather: str = "overcast"
    season: str = "summer"

    def validate(self) -> None:
        """Raise ValueError naming the field that is not one of its choices."""
        for name, choices in (("time_of_day", TIMES_OF_DAY), ("weather", WEATHERS), ("season", SEASONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"Condition.{name} must be one of {choices}, got {getattr(self, name)!r}")

    @property
    def label(self) -> str:
        """``time_of_day/weather/season``, e.g. ``night/rain/autumn``."""
        return f"{self.time_of_day}/{self.weather}/{self.season}"

    @classmethod
    def parse(cls, label: str) -> Condition:
        """The condition of a :attr:`label` (``"night/rain/autumn"``); missing parts keep their defaults."""
        parts = [p for p in label.strip().split("/") if p]
        if len(parts) > 3:
            raise ValueError(f"Condition label {label!r} has more than three parts (time/weather/season)")
        names = ("time_of_day", "weather", "season")
        cond = cls(**dict(zip(names, parts, strict=False)))
        cond.validate()
        return cond


@dataclass
class Appearance:
    """Everything a frame is rendered under (illumination, weather, season, sensor, clutter).

    The default is an overcast summer day with a clean sensor (used for mapping).
    ``sun_strength`` 0 means diffuse light only (no shadows); up to 1 gives hard
    sun light and shadows from ``sun_azimuth_rad`` (from east, counter-clockwise)
    and ``sun_elevation_rad``. ``gain``/``gamma``/``color_gain`` (BGR) model
    exposure and white balance; ``noise_sigma`` is Gaussian sensor noise (grey
    levels); ``occluders`` is the number of cars/pedestrians placed in the
    street ahead; ``seed`` drives everything random in one frame (noise, clouds,
    occluders, rain and snow layers).

    Night and weather (all 0 = off, the default): ``night`` in [0, 1] dims daylight to
    ``1 - 0.95 * night`` and turns on the artificial light at strength ``night``: street
    lamps (``lamp_bgr``) casting pools of light, lit windows (``lit_windows``: which of two
    seeded window sets is lit, 0 none, 1, 2, 3 both), the camera's own ``headlights`` (0-1)
    with a 1/distance^2 falloff, and ceiling lights indoors. ``fog_m`` is the fog's
    extinction length: a pixel at depth d keeps ``exp(-d / fog_m)`` of its colour and
    takes the rest from ``fog_bgr``. ``rain`` (0-1) darkens wet surfaces and adds streaks;
    ``snow`` (0-1) covers the ground and horizontal ledges; ``snowfall`` (0-1) adds flakes.
    ``season`` (:data:`SEASONS`) dresses the street trees. ``cloud_brightness`` is the
    grey level of the clouds (dark at night).
    """

    gain: float = 1.0
    gamma: float = 1.0
    color_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sun_strength: float = 0.0
    sun_azimuth_rad: float = 0.8
    sun_elevation_rad: float = 0.6
    sky_top_bgr: tuple[int, int, int] = (205, 195, 185)
    sky_horizon_bgr: tuple[int, int, int] = (225, 222, 218)
    cloud_cover: float = 0.3
    cloud_seed: int = 0
    haze_m: float = 350.0
    noise_sigma: float = 0.0
    blur_sigma: float = 0.0
    occluders: int = 0
    seed: int = 0
    night: float = 0.0
    lamp_bgr: tuple[int, int, int] = (130, 200, 255)
    lit_windows: int = 0
    headlights: float = 0.0
    fog_m: float = 0.0
    fog_bgr: tuple[int, int, int] = (200, 200, 198)
    rain: float = 0.0
    snow: float = 0.0
    snowfall: float = 0.0
    season: str = "summer"
    cloud_brightness: float = 245.0

    def validate(self) -> None:
        """Raise ValueError naming the first field out of range."""
        checks = [
            ("gain", self.gain > 0),
            ("gamma", self.gamma > 0),
            ("color_gain", len(self.color_gain) == 3 and min(self.color_gain) > 0),
            ("sun_strength", 0.0 <= self.sun_strength <= 1.0),
            ("sun_elevation_rad", 0.05 <= self.sun_elevation_rad <= math.pi / 2),
            ("cloud_cover", 0.0 <= self.cloud_cover <= 1.0),
            ("haze_m", self.haze_m > 0),
            ("noise_sigma", self.noise_sigma >= 0),
            ("blur_sigma", self.blur_sigma >= 0),
            ("occluders", self.occluders >= 0),
            ("night", 0.0 <= self.night <= 1.0),
            ("lit_windows", self.lit_windows in (0, 1, 2, 3)),
            ("headlights", 0.0 <= self.headlights <= 1.0),
            ("fog_m", self.fog_m == 0.0 or self.fog_m >= 1.0),
            ("rain", 0.0 <= self.rain <= 1.0),
            ("snow", 0.0 <= self.snow <= 1.0),
            ("snowfall", 0.0 <= self.snowfall <= 1.0),
            ("season", self.season in SEASONS),
            ("cloud_brightness", 0.0 <= self.cloud_brightness <= 255.0),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"Appearance.{name} is out of range: {getattr(self, name)!r}")

    @property
    def daylight(self) -> float:
        """The factor daylight (sun and sky) is dimmed by: 1 by day, 0.05 at full night."""
        return 1.0 - 0.95 * self.night


def _triple(v: np.ndarray) -> tuple[int, int, int]:
    return (int(v[0]), int(v[1]), int(v[2]))


def _bgr(rng: np.random.Generator, base: tuple[int, int, int], jitter: int) -> tuple[int, int, int]:
    v = np.clip(np.array(base) + rng.integers(-jitter, jitter + 1, 3), 0, 255)
    return (int(v[0]), int(v[1]), int(v[2]))


def condition_appearance(
    condition: Condition, seed: int | tuple[int, ...], indoor: bool = False
) -> Appearance:
    """A seeded :class:`Appearance` for ``condition`` (the same seed gives the same one).

    Every condition varies exposure, white balance, sensor noise, blur and clutter
    within the ranges of the query traversal; then:

    - day: ``clear`` has sun and shadows (elevation by season: summer 40-63 deg, spring and
      autumn 26-46 deg, winter 14-29 deg) under a blue sky; ``overcast`` diffuse light under
      grey clouds; ``rain`` a dark grey sky, wet surfaces and streaks; ``fog`` an extinction
      length of 12-40 m; ``snow`` snow cover 0.7-1 and falling flakes in 60 % of draws.
    - dusk: the sun 3-9 deg high (when clear), an orange horizon, ``night`` 0.35-0.55
      (lamps and windows on at that strength), half-strength headlights.
    - night: ``night`` 0.85-1, a dark sky with a faint glow at the horizon, lit windows,
      headlights, more sensor noise (4-8 grey levels) and auto-exposure gain 1.0-1.4.
    - indoor: only the time of day matters (ceiling lights; at night some are off and the
      rest dimmer); weather and season are ignored.
    """
    condition.validate()
    seeds = (seed,) if isinstance(seed, int) else tuple(seed)
    r = np.random.default_rng([*seeds, 8081])
    warm = float(r.uniform(-0.08, 0.08))
    app = Appearance(
        gain=float(r.uniform(0.8, 1.2)),
        gamma=float(r.uniform(0.8, 1.25)),
        color_gain=(1.0 - warm, float(r.uniform(0.97, 1.03)), 1.0 + warm),
        cloud_seed=int(r.integers(1 << 30)),
        noise_sigma=float(r.uniform(1.0, 3.5)),
        blur_sigma=float(r.uniform(0.0, 0.6)),
        occluders=int(r.integers(0, 4)),
        seed=int(r.integers(1 << 30)),
        season=condition.season,
    )
    tod = condition.time_of_day
    if indoor:
        app.occluders = int(r.integers(0, 3))
        if tod == "dusk":
            app.night = float(r.uniform(0.25, 0.4))
        elif tod == "night":
            app.night = float(r.uniform(0.6, 0.8))
            app.lit_windows = int(r.integers(1, 4))  # which ceiling lights stay on
            app.noise_sigma = float(r.uniform(3.0, 6.0))
            app.gain = float(r.uniform(1.1, 1.5))
        return app

    weather = condition.weather
    elev = {"summer": (0.7, 1.1), "spring": (0.45, 0.8), "autumn": (0.45, 0.8), "winter": (0.25, 0.5)}
    if weather == "clear":
        top = np.array([215, 160, 110]) + r.integers(-30, 31, 3)
        app.sun_strength = float(r.uniform(0.6, 1.0))
        app.sun_azimuth_rad = float(r.uniform(0.0, 2.0 * math.pi))
        app.sun_elevation_rad = float(r.uniform(*elev[condition.season]))
        app.sky_top_bgr = _bgr(r, _triple(np.clip(top, 0, 255)), 0)
        app.sky_horizon_bgr = _bgr(r, _triple(np.clip(top + 40, 0, 255)), 0)
        app.cloud_cover = float(r.uniform(0.0, 0.45))
        app.haze_m = float(r.uniform(200.0, 500.0))
    elif weather == "overcast":
        app.sky_top_bgr = _bgr(r, (200, 192, 185), 12)
        app.sky_horizon_bgr = _bgr(r, (222, 220, 216), 8)
        app.cloud_cover = float(r.uniform(0.4, 0.9))
        app.haze_m = float(r.uniform(180.0, 400.0))
    elif weather == "rain":
        app.sky_top_bgr = _bgr(r, (150, 145, 140), 12)
        app.sky_horizon_bgr = _bgr(r, (175, 172, 170), 10)
        app.cloud_cover = 0.95
        app.cloud_brightness = 190.0
        app.haze_m = float(r.uniform(100.0, 200.0))
        app.rain = float(r.uniform(0.5, 1.0))
        app.gain *= 0.9
    elif weather == "fog":
        grey = _bgr(r, (200, 200, 198), 12)
        app.sky_top_bgr = app.sky_horizon_bgr = app.fog_bgr = grey
        app.cloud_cover = 0.0
        app.fog_m = float(r.uniform(12.0, 40.0))
    else:  # snow
        app.sky_top_bgr = _bgr(r, (215, 210, 205), 10)
        app.sky_horizon_bgr = _bgr(r, (232, 230, 228), 6)
        app.cloud_cover = float(r.uniform(0.6, 1.0))
        app.haze_m = float(r.uniform(120.0, 300.0))
        app.snow = float(r.uniform(0.7, 1.0))
        app.snowfall = float(r.uniform(0.3, 1.0)) if r.random() < 0.6 else 0.0
        app.gain *= 0.92  # snow scenes meter darker

    if tod == "dusk":
        app.night = float(r.uniform(0.35, 0.55))
        app.lit_windows = int(r.integers(1, 4))
        app.headlights = 0.5
        if weather == "clear":
            app.sun_strength = float(r.uniform(0.3, 0.6))
            app.sun_elevation_rad = float(r.uniform(0.06, 0.15))
            app.sky_top_bgr = _bgr(r, (150, 90, 80), 20)
            app.sky_horizon_bgr = _bgr(r, (110, 165, 235), 15)
        else:
            app.sky_top_bgr = tuple(int(v * 0.6) for v in app.sky_top_bgr)  # type: ignore[assignment]
            app.sky_horizon_bgr = tuple(int(v * 0.7) for v in app.sky_horizon_bgr)  # type: ignore[assignment]
        app.cloud_brightness = min(app.cloud_brightness, 170.0)
        app.color_gain = (app.color_gain[0] * 0.94, app.color_gain[1], app.color_gain[2] * 1.06)
        app.gain *= float(r.uniform(1.0, 1.25))
    elif tod == "night":
        app.night = float(r.uniform(0.85, 1.0))
        app.sun_strength = 0.0
        app.lit_windows = int(r.integers(1, 4))
        app.headlights = 1.0
        app.sky_top_bgr = _bgr(r, (32, 20, 14), 6)
        app.sky_horizon_bgr = _bgr(r, (55, 60, 70), 8)  # light pollution at the horizon
        app.cloud_brightness = 45.0
        app.fog_bgr = tuple(int(v * 0.22) for v in app.fog_bgr)  # type: ignore[assignment]
        app.noise_sigma = float(r.uniform(4.0, 8.0))
        app.gain *= float(r.uniform(1.0, 1.4))
        app.blur_sigma = float(r.uniform(0.2, 0.9))
    return app
