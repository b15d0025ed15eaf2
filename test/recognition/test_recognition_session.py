"""RecognitionSession: the node's per-frame rules, tested without ROS (real model, real map).

The races of the old node (a reload or mode switch arriving while a frame is in the
network; a save while keyframes are being added) are reproduced deterministically with a
gate around the real extractor: the frame is held inside the network step until the test
has changed the session, then released.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.recognition import FrameStatus, RecognitionSession, SessionParams
from netvlad_ros.recognition.places import RecognitionParamError
from netvlad_ros.sensors.poses import KeyframeParams

from support import make_scene

QUAT = np.array([0.0, 0.0, 0.0, 1.0])


class GatedExtractor:
    """The real extractor, counting its calls; with ``hold`` set, each call waits in the network step
    until the test calls ``release`` (``entered`` tells the test a frame is inside)."""

    def __init__(self, inner: DescriptorExtractor) -> None:
        self.inner = inner
        self.calls = 0
        self.hold = False
        self.entered = threading.Event()
        self._go = threading.Event()

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def __call__(self, images):
        self.calls += 1
        if self.hold:
            self.entered.set()
            assert self._go.wait(60), "test never released the frame"
        return self.inner(images)

    def release(self) -> None:
        self._go.set()


@pytest.fixture(scope="module")
def extractor(small_model) -> DescriptorExtractor:
    return DescriptorExtractor(small_model, device="cpu", runtime="torch")


@pytest.fixture
def gated(extractor) -> GatedExtractor:
    return GatedExtractor(extractor)


def scene_map(extractor, scenes, n: int = 6) -> MapDatabase:
    """Keyframe i = scene i at (10 i, 0, 0), stamp 1000 + i."""
    db = MapDatabase.create(extractor.dim, extractor.fingerprint)
    kfs = [Keyframe(stamp=1000.0 + i, position=[10.0 * i, 0, 0]) for i in range(n)]
    db.add(kfs, extractor(scenes[:n]))
    return db


def slam_session(gated, **keyframe) -> RecognitionSession:
    db = MapDatabase.create(gated.dim, gated.fingerprint)
    params = SessionParams(mode="slam", keyframe=KeyframeParams(**keyframe))
    return RecognitionSession(gated, db, params)


def test_localization_finds_the_place_and_resets_on_time_going_backwards(gated, scenes):
    session = RecognitionSession(gated, scene_map(gated, scenes), SessionParams())
    res = session.process(5.0, scenes[3])
    assert res.status == FrameStatus.LOCALIZED
    assert res.localization.hypotheses[0].keyframe_id == 3  # the same image: rank 0
    assert res.timings_ms["network"] > 0 and not res.events
    t = res.timings_ms  # the map stage's parts, for /diagnostics: each inside the whole
    assert t["search"] > 0 and t["search"] + t.get("verification", 0.0) <= t["finish"]
    assert "verification" in t  # the query's features were verified (the map has none: unverifiable)
    back = session.process(4.0, scenes[3])  # older than the previous image: flagged, still answered
    assert back.status == FrameStatus.LOCALIZED
    assert [e.reason for e in back.events] == ["time_backwards"]
    assert session.process(float("nan"), scenes[3]).reason == "invalid_stamp"


def test_a_new_threshold_reaches_the_localizer(gated, scenes):
    """The same image is accepted at min_score 0 and refused at 0.9999 (it scores < 1 on a neighbour)."""
    session = RecognitionSession(gated, scene_map(gated, scenes), SessionParams())
    query = make_scene(3, 240, 320)[:, ::-1].copy()  # mirrored scene 3: similar, not identical
    # The map has no local features: unverified places, accepted on the score thresholds only.
    lenient = SessionParams()
    lenient.localizer.require_verification = False
    lenient.localizer.min_score, lenient.localizer.min_margin = -0.99, 1e-6  # explicit, not 0 = auto
    session.configure(lenient)
    first = session.process(1.0, query).localization
    assert first.accepted
    strict = SessionParams()
    strict.localizer.require_verification = False
    strict.localizer.min_score, strict.localizer.min_margin = 0.9999, 1e-6
    session.configure(strict)
    second = session.process(2.0, query).localization
    assert not second.accepted and second.reason.value == "below_min_score"
    assert first.best_place.score == pytest.approx(
        second.best_place.score, abs=1e-6
    )  # same image, same score
    assert first.best_place.score < 0.9999


def test_slam_rules_odom_gate_and_time(gated, scenes):
    session = slam_session(gated, distance_m=1.0, angle_deg=0.0, period_s=0.0)
    assert session.process(10.0, scenes[0]).reason == "no_odom"
    session.add_odometry(9.9, np.zeros(3), QUAT, "odom")
    session.add_odometry(10.1, np.zeros(3), QUAT, "odom")
    first = session.process(10.0, scenes[0])
    assert first.status == FrameStatus.KEYFRAME and first.keyframe_id == 0
    calls = gated.calls
    session.add_odometry(11.0, np.array([0.5, 0, 0]), QUAT)
    assert session.process(11.0, scenes[1]).status == FrameStatus.NOT_KEYFRAME
    assert gated.calls == calls  # not a keyframe: the network did not run
    session.add_odometry(12.0, np.array([1.5, 0, 0]), QUAT)
    second = session.process(12.0, scenes[2])
    assert second.status == FrameStatus.KEYFRAME
    t = second.timings_ms  # the loop-closure search (no candidate to verify yet), inside the map stage
    assert t["search"] > 0 and "verification" not in t and t["search"] <= t["finish"]
    late = session.process(11.5, scenes[3])  # older than the last keyframe
    assert late.status == FrameStatus.REJECTED and late.reason == "time_backwards"
    kf = session.map.keyframe(0)
    assert kf.frame_id == "odom" and session.unsaved_changes == 2


def test_odometry_and_gps_events(gated, scenes):
    session = slam_session(gated, distance_m=0.0, angle_deg=0.0, period_s=0.0)
    assert session.add_odometry(5.0, np.array([np.nan, 0, 0]), QUAT).reason == "odom_invalid"
    assert session.add_odometry(5.0, np.zeros(3), QUAT) is None
    assert session.add_odometry(4.0, np.zeros(3), QUAT).reason == "odom_time_backwards"
    assert session.add_fix(4.0, 95.0, 0.0, 0.0).reason == "gps_invalid"
    assert session.add_fix(4.2, 47.0, 8.0, 400.0) is None
    res = session.process(4.0, scenes[0])  # the buffer restarted at t=4: a pose is there
    assert res.status == FrameStatus.KEYFRAME
    assert session.map.keyframe(res.keyframe_id).latlonalt == (47.0, 8.0, 400.0)  # 0.2 s <= gps_max_age_s 1.0
    session.add_odometry(10.0, np.zeros(3), QUAT)
    res = session.process(10.0, scenes[1])
    assert session.map.keyframe(res.keyframe_id).latlonalt is None  # the fix is 5.8 s old


def _in_flight(session, gated, stamp, image):
    """Start a frame on a thread; return (thread, result box) once it is inside the network."""
    out = {}
    gated.hold = True
    t = threading.Thread(target=lambda: out.setdefault("res", session.process(stamp, image)))
    t.start()
    assert gated.entered.wait(60)
    return t, out


def test_a_reload_mid_frame_never_adds_a_stale_keyframe(gated, scenes):
    session = slam_session(gated, distance_m=0.0, angle_deg=0.0, period_s=0.0)
    session.add_odometry(1.0, np.zeros(3), QUAT)
    old_map = session.map
    t, out = _in_flight(session, gated, 1.0, scenes[0])
    new_map = scene_map(gated.inner, scenes, 3)
    session.replace_map(new_map)  # ~/reload_map while the frame is in the network
    gated.release()
    t.join(60)
    assert out["res"].status == FrameStatus.STALE and out["res"].reason == "stale"
    assert len(new_map) == 3 and len(old_map) == 0  # neither map got the frame
    gated.hold = False
    assert (
        session.process(1.0, scenes[1]).status == FrameStatus.KEYFRAME
    )  # the next frame goes to the new map
    assert len(new_map) == 4


def test_a_mode_switch_mid_frame_drops_the_frame(gated, scenes):
    session = slam_session(gated, distance_m=0.0, angle_deg=0.0, period_s=0.0)
    session.add_odometry(1.0, np.zeros(3), QUAT)
    t, out = _in_flight(session, gated, 1.0, scenes[0])
    session.set_mode("localization")  # ~/set_slam_mode false while the frame is in the network
    gated.release()
    t.join(60)
    assert out["res"].status == FrameStatus.STALE
    assert len(session.map) == 0 and session.mode == "localization"


def test_two_frames_in_flight_make_one_keyframe(gated, scenes):
    """Pipelined callers plan two frames against the same last keyframe: the gate is asked again."""
    session = slam_session(gated, distance_m=1.0, angle_deg=0.0, period_s=0.0)
    session.add_odometry(1.0, np.zeros(3), QUAT)
    session.add_odometry(2.0, np.zeros(3), QUAT)
    a = session.begin(1.0, scenes[0])
    b = session.begin(2.0, scenes[1])  # both due: nothing taken yet
    assert session.finish(a, session.describe(a)).status == FrameStatus.KEYFRAME
    assert session.finish(b, session.describe(b)).status == FrameStatus.NOT_KEYFRAME  # 0 m from the new one
    assert len(session.map) == 1


def test_save_writes_a_snapshot_while_frames_keep_coming(gated, scenes, tmp_path):
    session = slam_session(gated, distance_m=0.0, angle_deg=0.0, period_s=0.0)
    for i in range(3):
        session.add_odometry(float(i), np.array([float(i), 0, 0]), QUAT)
        session.process(float(i), scenes[i])
    session.add_odometry(3.0, np.array([3.0, 0, 0]), QUAT)
    t, out = _in_flight(session, gated, 3.0, scenes[3])
    saved = session.save(tmp_path / "map")  # the frame in the network holds no lock: the save goes on
    gated.release()
    t.join(60)
    assert saved.keyframes == 3 and out["res"].status == FrameStatus.KEYFRAME
    assert len(MapDatabase.load(tmp_path / "map")) == 3
    assert session.unsaved_changes == 1  # the keyframe added after the snapshot
    session.save(tmp_path / "map")
    assert session.unsaved_changes == 0 and len(MapDatabase.load(tmp_path / "map")) == 4


def test_a_map_of_another_dimension_is_refused(gated):
    with pytest.raises(RecognitionParamError, match="map holds 7-D descriptors"):
        RecognitionSession(gated, MapDatabase.create(7, "x"))
    with pytest.raises(RecognitionParamError, match="mode must be one of"):
        RecognitionSession(gated, MapDatabase.create(gated.dim, "x")).set_mode("mapping")


@pytest.mark.parametrize(("wait_s", "expected_x"), [(5.0, 1.0), (0.0, 0.0)])
def test_an_image_before_its_odometry_waits_for_it(gated, scenes, wait_s, expected_x):
    """The camera frame arrives first; the odometry after its stamp a moment later. With a wait the
    pose is interpolated (x = 1.0 halfway between 0 and 2); without, the older sample is held."""
    db = MapDatabase.create(gated.dim, gated.fingerprint)
    session = RecognitionSession(gated, db, SessionParams(mode="slam", odom_wait_s=wait_s))
    session.add_odometry(9.9, np.zeros(3), QUAT)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("res", session.process(10.0, scenes[0])))
    t.start()
    if wait_s:
        time.sleep(0.2)  # the frame is waiting (up to 5 s) for odometry newer than 10.0
    else:
        t.join(60)
    session.add_odometry(10.1, np.array([2.0, 0, 0]), QUAT)
    t.join(60)
    res = out["res"]
    assert res.status == FrameStatus.KEYFRAME
    assert session.map.keyframe(res.keyframe_id).position[0] == pytest.approx(expected_x)


def test_a_slam_save_calibrates_the_changed_map(gated, scenes, tmp_path):
    """A slam map saved with enough keyframes is calibrated from its own poses (issue 10: "when
    slam mode saves"), so localization on it later uses calibrated thresholds; an unchanged map
    is not recalibrated; ``calibrate_on_save`` False leaves it uncalibrated."""
    session = slam_session(gated, distance_m=0.0, angle_deg=0.0, period_s=0.0)
    for i in range(24):  # 2 m apart along x: 0 .. 46 m (same place <= 10 m, different >= 25 m)
        session.add_odometry(float(i), np.array([2.0 * i, 0, 0]), QUAT)
        assert session.process(float(i), scenes[i % 12]).status == FrameStatus.KEYFRAME
    assert session.map.calibration is None
    first = session.save(tmp_path / "map")
    assert first.calibration.startswith("calibrated on "), first.calibration
    saved = MapDatabase.load(tmp_path / "map")
    assert saved.calibration is not None and saved.calibration["keyframes"] == 24
    assert session.map.calibration == saved.calibration  # the live map has it too
    again = session.save(tmp_path / "map")
    assert again.calibration == "unchanged"
    # a new session on the saved map: its localizer reads the calibration, no fallback
    reloaded = RecognitionSession(gated, MapDatabase.load(tmp_path / "map"), SessionParams())
    assert not reloaded.status()["calibration"].startswith("not calibrated"), reloaded.status()
    # one more keyframe: recalibrated, also with the keyframes written before the calibration
    session.add_odometry(24.0, np.array([48.0, 0, 0]), QUAT)
    session.process(24.0, scenes[0])
    third = session.save(tmp_path / "map", secure_first=True)
    assert third.calibration.startswith("calibrated on ")
    assert MapDatabase.load(tmp_path / "map").calibration["keyframes"] == 25

    off = SessionParams(mode="slam", keyframe=KeyframeParams(distance_m=0.0, angle_deg=0.0, period_s=0.0))
    off.calibrate_on_save = False
    plain = RecognitionSession(gated, MapDatabase.create(gated.dim, gated.fingerprint), off)
    for i in range(24):
        plain.add_odometry(float(i), np.array([2.0 * i, 0, 0]), QUAT)
        plain.process(float(i), scenes[i % 12])
    assert plain.save(tmp_path / "off").calibration == "unchanged"
    assert MapDatabase.load(tmp_path / "off").calibration is None


def test_a_slam_save_of_a_small_map_says_why_it_is_not_calibrated(gated, scenes, tmp_path):
    session = slam_session(gated, distance_m=0.0, angle_deg=0.0, period_s=0.0)
    for i in range(3):
        session.add_odometry(float(i), np.array([float(i), 0, 0]), QUAT)
        session.process(float(i), scenes[i])
    res = session.save(tmp_path / "map")
    assert res.calibration == "not calibrated: the map has 3 keyframes (calibration needs at least 20)"
    assert MapDatabase.load(tmp_path / "map").calibration is None
