"""Conditions of the synthetic world: each is deterministic, each really changes what the
camera sees (night is dark, snow is white, fog hides the distance, rain darkens, seasons
change the trees), while the place's geometry (its depth) stays the same, and the
indoor corridor scene is a world of its own."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from netvlad_ros.synthetic.conditions import SEASONS, TIMES_OF_DAY, WEATHERS, Appearance, Condition
from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig

CONFIG = {"seed": 21, "width": 320, "height": 240, "blocks_x": 1, "blocks_y": 1, "tree_spacing_m": 12.0,
          "lamp_spacing_m": 24.0}  # fmt: skip
VIEWS = [((x, -2.5), 0.0) for x in (10.0, 25.0, 40.0, 55.0)]  # along the south street, looking east


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(**CONFIG))


def _app(world: SyntheticWorld, label: str, seed: int, **changes: object) -> Appearance:
    return dataclasses.replace(world.appearance(label, seed), **changes)


ALL_LABELS = [f"{t}/{w}/{s}" for t in TIMES_OF_DAY for w in WEATHERS for s in ("summer", "winter")] + [
    "day/clear/autumn",
    "day/overcast/spring",
]


def test_every_condition_is_deterministic(world: SyntheticWorld) -> None:
    """The same condition and seed give the same appearance and the same image, also from a second
    world built from the same config; another seed gives another image."""
    again = SyntheticWorld(WorldConfig(**CONFIG))
    (pos, yaw) = VIEWS[1]
    for label in ALL_LABELS:
        a = world.appearance(label, 4)
        assert a == again.appearance(label, 4)
        img, depth = world.render_rgbd(pos, yaw, a)
        img2, depth2 = again.render_rgbd(pos, yaw, a)
        assert np.array_equal(img, img2) and np.array_equal(depth, depth2), label
        other = world.render(pos, yaw, world.appearance(label, 5))
        assert np.abs(other.astype(np.int16) - img.astype(np.int16)).mean() > 1.0, label


def test_condition_labels_parse_and_bad_ones_are_refused() -> None:
    assert Condition.parse("night/rain/autumn") == Condition("night", "rain", "autumn")
    assert Condition.parse("dusk") == Condition(time_of_day="dusk")
    assert Condition().label == "day/overcast/summer"
    with pytest.raises(ValueError, match="weather"):
        Condition.parse("day/hail")
    with pytest.raises(ValueError, match="more than three"):
        Condition.parse("a/b/c/d")
    with pytest.raises(ValueError, match="season"):
        Appearance(season="monsoon").validate()
    with pytest.raises(ValueError, match="fog_m"):
        Appearance(fog_m=0.5).validate()
    with pytest.raises(ValueError, match="scene"):
        WorldConfig(scene="cave").validate()


def test_night_is_far_darker_than_day(world: SyntheticWorld) -> None:
    ratios = []
    for i, (pos, yaw) in enumerate(VIEWS):
        day = world.render(pos, yaw, world.appearance("day/overcast/summer", 1 + i)).mean()
        night = world.render(pos, yaw, world.appearance("night/clear/summer", 1 + i)).mean()
        ratios.append(night / day)
    assert max(ratios) < 0.6  # measured 0.34-0.47: lamps, windows and headlights, but dark


def test_night_has_its_own_lights(world: SyntheticWorld) -> None:
    """At night the lamps, lit windows and headlights make the bright parts: turned off, the same
    view is darker, and the lit windows are what appears where the walls are."""
    pos, yaw = VIEWS[2]
    night = _app(world, "night/clear/summer", 3, occluders=0, noise_sigma=0.0)
    full = world.render(pos, yaw, night).astype(np.float64)
    dark = world.render(pos, yaw, dataclasses.replace(night, headlights=0.0, lit_windows=0))
    no_lamps = SyntheticWorld(WorldConfig(**{**CONFIG, "lamp_spacing_m": 0.0})).render(pos, yaw, night)
    assert full.mean() > dark.mean() + 10.0  # measured 65.3 vs 44.3
    assert full.mean() > no_lamps.mean() + 10.0  # measured 65.3 vs 43.6 (street lamps off)
    assert np.mean(full.max(axis=2) > 240) > 0.002  # glowing windows and lamp heads; measured 0.8 %


def test_snow_whitens_the_ground(world: SyntheticWorld) -> None:
    for i, (pos, yaw) in enumerate(VIEWS[:3]):
        snowy = _app(world, "day/snow/winter", 1 + i, occluders=0, snowfall=0.0)
        bare = dataclasses.replace(snowy, snow=0.0)
        g_snow = world.render(pos, yaw, snowy)[170:].astype(np.float64)
        g_bare = world.render(pos, yaw, bare)[170:].astype(np.float64)
        white = lambda g: np.mean((g.min(axis=2) > 150) & (g.max(axis=2) - g.min(axis=2) < 30))  # noqa: E731
        assert white(g_snow) > white(g_bare) + 0.3  # measured 0.78-0.82 vs 0.01-0.02 of the ground rows
        assert g_snow.mean() > g_bare.mean() + 30.0  # measured +83 to +95 grey levels


def test_fog_hides_the_distance(world: SyntheticWorld) -> None:
    """In fog, far pixels lose their contrast (depth-dependent attenuation), near ones keep most."""
    for i, (pos, yaw) in enumerate(VIEWS[:3]):
        fog = _app(world, "day/fog/summer", 1 + i, occluders=0, noise_sigma=0.0)
        clear = dataclasses.replace(fog, fog_m=0.0)
        img_f, depth = world.render_rgbd(pos, yaw, fog)
        img_c = world.render(pos, yaw, clear)
        gf = cv2.cvtColor(img_f, cv2.COLOR_BGR2GRAY).astype(np.float64)
        gc = cv2.cvtColor(img_c, cv2.COLOR_BGR2GRAY).astype(np.float64)
        far = np.isfinite(depth) & (depth > 40.0)
        near = depth < 4.0
        assert gf[far].std() < 0.4 * gc[far].std()  # measured 0.18-0.30
        assert np.abs(gf[near] - gc[near]).mean() < np.abs(gf[far] - gc[far]).mean()


def test_rain_darkens_wet_surfaces_and_streaks(world: SyntheticWorld) -> None:
    for i, (pos, yaw) in enumerate(VIEWS[:3]):
        rain = _app(world, "day/rain/summer", 1 + i, occluders=0, noise_sigma=0.0)
        dry = dataclasses.replace(rain, rain=0.0)
        wet_img, dry_img = world.render(pos, yaw, rain), world.render(pos, yaw, dry)
        assert wet_img[170:].mean() < dry_img[170:].mean() - 10.0  # wet ground; measured -16 to -25
        # streaks: thin bright lines, so the wet-minus-dry difference varies from column to column
        diff = wet_img.astype(np.float64) - dry_img.astype(np.float64)
        assert np.abs(np.diff(diff, axis=1)).mean() > 0.8  # measured 1.5-1.9 (the darkening alone: smooth)


def test_seasons_change_the_trees(world: SyntheticWorld) -> None:
    """Summer trees are green, autumn ones orange, winter ones bare: the same view differs in the
    tree pixels while the buildings stay."""
    for pos, yaw in VIEWS[:2]:
        base = _app(world, "day/overcast/summer", 5, occluders=0, noise_sigma=0.0)
        imgs = {s: world.render(pos, yaw, dataclasses.replace(base, season=s)) for s in SEASONS}
        hsv = {s: cv2.cvtColor(im, cv2.COLOR_BGR2HSV) for s, im in imgs.items()}
        green = {s: np.mean((h[..., 0] > 35) & (h[..., 0] < 85) & (h[..., 1] > 80)) for s, h in hsv.items()}
        orange = {s: np.mean((h[..., 0] > 5) & (h[..., 0] < 25) & (h[..., 1] > 120)) for s, h in hsv.items()}
        assert green["summer"] > 2.5 * green["winter"]  # measured 0.093-0.097 vs 0.017-0.028
        assert green["summer"] > green["spring"] > green["winter"]  # spring: lighter green and blossom
        assert orange["autumn"] > 3.0 * orange["summer"]  # measured 0.059-0.075 vs 0.005-0.012
        changed = np.any(imgs["summer"] != imgs["winter"], axis=2).mean()
        assert 0.02 < changed < 0.2  # only the trees' pixels change; measured 5-10 % of the image


def test_the_place_keeps_its_geometry_across_conditions(world: SyntheticWorld) -> None:
    """Depth is geometry only: the same under every time of day and weather (same season); and
    the edges of a place under another condition resemble that place more than another place."""
    pos, yaw = VIEWS[1]
    ref = world.render_rgbd(pos, yaw, _app(world, "day/overcast/summer", 3, occluders=0))[1]
    for label in ("night/rain/summer", "dusk/fog/summer", "day/snow/summer", "day/clear/summer"):
        assert np.array_equal(world.render_rgbd(pos, yaw, _app(world, label, 3, occluders=0))[1], ref), label

    def edges(img: np.ndarray) -> np.ndarray:
        g = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 1.5)
        e = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
        e = cv2.resize(e, (80, 60), interpolation=cv2.INTER_AREA).ravel()
        e -= e.mean()
        return e / np.linalg.norm(e)

    day = [edges(world.render(p, y, _app(world, "day/overcast/summer", 9, occluders=0))) for p, y in VIEWS]
    for label in ("dusk/clear/summer", "day/snow/winter", "night/clear/summer", "day/fog/autumn"):
        other = [edges(world.render(p, y, _app(world, label, 9, occluders=0))) for p, y in VIEWS]
        same = np.mean([day[i] @ other[i] for i in range(4)])
        elsewhere = np.mean([day[i] @ day[(i + 2) % 4] for i in range(4)])
        # measured: same place 0.53 (night) to 0.91 (dusk); another place 0.32
        assert same > elsewhere + 0.1, label


def test_corridor_world_is_indoors() -> None:
    """The corridor scene: walls everywhere (no sky), lit ceiling panels, a repeated wall style,
    and the time of day changes the light while weather does not reach indoors."""
    w = SyntheticWorld(WorldConfig.corridors(seed=4, width=320, height=240, blocks_x=1, blocks_y=1))
    frames = w.traversal("mapping", spacing_m=1.5, max_frames=6, depth=True)
    assert all(f.scene == "corridor" and f.depth is not None and np.isfinite(f.depth).all() for f in frames)
    pos, yaw = frames[3].position[:2], frames[3].yaw
    day = w.render(pos, yaw, w.appearance("day/overcast/summer", 2))
    night = w.render(pos, yaw, w.appearance("night/overcast/summer", 2))
    assert night.mean() < 0.8 * day.mean()  # some lights off, the rest dimmer; measured 0.69
    assert np.mean(day[:60].min(axis=2) > 235) > 0.005  # bright ceiling panels; measured 1.7 %
    base = _app(w, "day/overcast/summer", 2, occluders=0)
    for weather in ("rain", "fog", "snow"):  # indoors the weather and the season change nothing
        other = dataclasses.replace(_app(w, f"day/{weather}/winter", 2, occluders=0), **{
            k: getattr(base, k) for k in ("gain", "gamma", "color_gain", "noise_sigma", "blur_sigma", "seed")
        })  # fmt: skip
        assert np.array_equal(w.render(pos, yaw, other), w.render(pos, yaw, base)), weather


def test_a_query_traversal_can_have_another_condition(world: SyntheticWorld) -> None:
    """Mapping by day, querying at night: same route, other images, frames say their condition."""
    mapping = world.traversal("mapping", spacing_m=6.0, max_frames=6)
    night = world.traversal("mapping", spacing_m=6.0, max_frames=6, condition="night/clear/winter")
    assert [f.condition for f in mapping] == [None] * 6
    assert all(f.condition == Condition("night", "clear", "winter") for f in night)
    for a, b in zip(mapping, night, strict=True):
        assert np.array_equal(a.position, b.position)
        assert b.image.mean() < 0.7 * a.image.mean()
    later = world.traversal("mapping", spacing_m=6.0, max_frames=2, start_m=30.0)
    assert np.allclose(later[0].position, mapping[5].position)  # start_m: 30 m along the route
