"""The per-frame recognition session: what the robot does with each camera frame, without ROS.

A :class:`RecognitionSession` holds the map, the localizer, the loop-closure detector, the
keyframe gate and the odometry / GPS buffers, and applies the node's rules to each frame:

- ``localization`` mode: describe the image, query the map (``LocalizationResult``); an
  image older than the previous one resets the temporal filter (event ``time_backwards``)
  and is still localized.
- ``slam`` mode: an image needs an odometry pose within ``odom_max_age_s`` of its stamp
  (else rejected ``no_odom``), interpolated between the samples around it (when none newer
  than the image has arrived yet, the session waits up to ``odom_wait_s`` for one); it becomes a keyframe when the gate says so (moved
  ``keyframe.distance_m``, turned ``keyframe.angle_deg`` or ``keyframe.period_s`` passed),
  is added to the map with the nearest GPS fix (``gps_max_age_s``) and searched for loop
  closures. An image older than the last keyframe is rejected (``time_backwards``);
  frames that are not keyframes never run the network.

The ROS node (``ros/localize_node.py``), ``eval-map`` and the demo all use this class,
so what the robot does is testable without DDS.

Threads and the map generation
------------------------------
A frame goes through four steps, which :meth:`process` runs in order and a pipelined
caller (the node's three worker stages) can run on separate threads, so that with
``pipeline_frames`` 2 or 3 the next frame is decoded and preprocessed while the current
one is in the network (the node's default, 1, takes one frame at a time):

1. :meth:`begin` (under the session lock): the mode and time rules, the odometry pose,
   the keyframe gate; it snapshots the current *map generation*.
2. :meth:`prepare` (no lock): the network's input (resize, normalise).
3. :meth:`describe` (no lock): the network. Services may run meanwhile.
4. :meth:`finish` (under the lock): if the generation changed in between (the map was
   replaced by :meth:`replace_map`, or the mode switched by :meth:`set_mode`), the frame
   is dropped as ``stale`` instead of writing a keyframe planned for the old map into the
   new one; otherwise the keyframe is added / the map is queried.

:meth:`configure` swaps parameters under the lock (no generation change: a frame planned
with the old thresholds is finished with the new ones, which is harmless). :meth:`save`
takes a snapshot of the map under the lock and writes it with no lock held, so a large
save never stalls frames or other callers.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from netvlad_ros.config import check_fields, param
from netvlad_ros.mapdb import CameraIntrinsics, Keyframe, KeyframeFeatures, MapDatabase
from netvlad_ros.mapdb.snapshot import MapSnapshot, canonical_calibration
from netvlad_ros.mapdb.storage import save_snapshot
from netvlad_ros.recognition.calibration import CalibrationParams, calibrate_or_reason
from netvlad_ros.recognition.features import FeatureExtractor, FeatureParams
from netvlad_ros.recognition.geometry import GeometricVerifier, GeometryParams
from netvlad_ros.recognition.localizer import LocalizationResult, Localizer, LocalizerParams
from netvlad_ros.recognition.loop_closure import LoopClosureDetector, LoopClosureParams, LoopClosureResult
from netvlad_ros.recognition.places import RecognitionParamError
from netvlad_ros.sensors.camera import CameraParams
from netvlad_ros.sensors.errors import SensorError
from netvlad_ros.sensors.poses import KeyframeParams, KeyframeSelector, PoseBuffer, PoseError, PoseOrderError

__all__ = [
    "MODES",
    "SESSION_REASONS",
    "Describer",
    "FrameEvent",
    "FramePlan",
    "FrameResult",
    "FrameStatus",
    "PreparedFrame",
    "RecognitionSession",
    "SaveResult",
    "SessionParams",
]

#: Operating modes.
MODES = ("localization", "slam")

#: Every reason the session drops or flags an input (the node adds its decode reasons).
SESSION_REASONS: tuple[str, ...] = (
    "time_backwards",
    "no_odom",
    "odom_invalid",
    "odom_time_backwards",
    "gps_invalid",
    "invalid_stamp",
    "stale",
)


class Describer(Protocol):
    """What the session needs of a descriptor extractor (``model.DescriptorExtractor``).

    ``prepare(images)`` / ``run(prepared)`` split preprocessing from the network (pipelining);
    an extractor without them is called as ``extractor(images)`` in :meth:`RecognitionSession.describe`.
    """

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def __call__(self, images: list[np.ndarray]) -> np.ndarray: ...


@dataclass
class SessionParams:
    """The per-frame rules and the recognition thresholds (ROS parameters of the node)."""

    mode: str = param(
        "localization",
        "localization (query a fixed map) or slam (grow the map, detect loop closures); "
        "also switched by ~/set_slam_mode",
        choices=MODES,
    )
    odom_max_age_s: float = param(
        0.5,
        "slam: an image needs an odom pose within this of its stamp "
        "(interpolated between two odom messages, else the nearest)",
        range=(0.0, 3600.0),
    )
    odom_wait_s: float = param(
        0.2,
        "slam: when no odom message newer than an image has arrived yet, wait up to this long for one "
        "(cameras often deliver a frame before the odometry of its instant); 0 = never wait",
        range=(0.0, 10.0),
    )
    gps_max_age_s: float = param(
        1.0, "slam: a fix this close to the image stamp is stored with the keyframe", range=(0.0, 3600.0)
    )
    keyframe: KeyframeParams = field(default_factory=KeyframeParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    camera: CameraParams = field(default_factory=CameraParams)
    localizer: LocalizerParams = field(default_factory=LocalizerParams)
    loop_closure: LoopClosureParams = field(default_factory=LoopClosureParams)
    calibrate_on_save: bool = param(
        True,
        "recalibrate the map from its own poses when a changed map is saved (slam), so localization "
        "on it later uses calibrated thresholds (docs/recognition.md, Calibration)",
    )
    calibration: CalibrationParams = field(default_factory=CalibrationParams)

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)
        try:
            self.camera.validate()
        except SensorError as exc:
            raise RecognitionParamError(str(exc)) from exc
        self.features.validate()
        self.localizer.validate()
        self.loop_closure.validate()
        self.calibration.validate()


class FrameStatus(str, Enum):
    """What became of a frame."""

    LOCALIZED = "localized"  # localization ran; ``localization.accepted`` says whether to trust it
    KEYFRAME = "keyframe"  # slam: added to the map; ``loop_closure`` holds the detector's answer
    NOT_KEYFRAME = "not_keyframe"  # slam: the gate said no; the network did not run
    REJECTED = "rejected"  # unusable input; ``reason`` says why
    STALE = "stale"  # the map or mode changed while the frame was in the network: dropped


@dataclass(frozen=True)
class FrameEvent:
    """Something about an input worth a warning: ``reason`` (one of SESSION_REASONS) and a text."""

    reason: str
    text: str


@dataclass(frozen=True)
class FramePlan:
    """What :meth:`RecognitionSession.begin` decided for a frame that needs the network."""

    stamp: float
    mode: str
    generation: int
    image: np.ndarray = field(repr=False)
    pose: tuple[np.ndarray, np.ndarray] | None = None  # slam: odometry position, quaternion
    depth: np.ndarray | None = field(default=None, repr=False)  # aligned metres, NaN = unknown
    camera: CameraIntrinsics | None = None  # the image's intrinsics (camera_info, else the fallback)
    latlonalt: tuple[float, float, float] | None = None
    frame_id: str = ""
    events: tuple[FrameEvent, ...] = ()
    started: float = 0.0  # time.perf_counter() at begin


@dataclass(frozen=True)
class PreparedFrame:
    """What :meth:`RecognitionSession.prepare` made: the network input (None: the extractor has no
    ``prepare``) and the image's local features (None when not needed)."""

    net_input: Any
    features: KeyframeFeatures | None


@dataclass(frozen=True)
class FrameResult:
    """The outcome of one frame.

    ``timings_ms``: ``network`` (describe) and ``finish`` (search, verification, map update),
    and of ``finish`` the ``search`` part (localized frames, keyframes) and the
    ``verification`` part (when candidates were verified: the p50 is of those frames).
    ``loop_positions``: map positions of the query and matched keyframes of accepted loop
    closures (for markers), read under the same lock as the closures.
    """

    stamp: float
    mode: str
    status: FrameStatus
    reason: str | None = None
    text: str | None = None
    events: tuple[FrameEvent, ...] = ()
    localization: LocalizationResult | None = None
    keyframe_id: int | None = None
    loop_closure: LoopClosureResult | None = None
    loop_positions: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    timings_ms: dict[str, float] = field(default_factory=dict)
    descriptor: np.ndarray | None = field(default=None, repr=False)  # when the network ran


@dataclass(frozen=True)
class SaveResult:
    """What :meth:`RecognitionSession.save` wrote."""

    path: Path
    keyframes: int
    seconds: float
    calibration: str = "unchanged"  # what the save did to the map's calibration (one line)


class RecognitionSession:
    """One robot's recognition state over one map; see the module docstring for the rules."""

    def __init__(self, extractor: Describer, db: MapDatabase, params: SessionParams | None = None) -> None:
        self.params = params or SessionParams()
        self.params.validate()
        self._check_map(extractor, db)
        self.extractor = extractor
        self._lock = threading.RLock()
        self._odom_arrived = threading.Condition(self._lock)
        self._save_lock = threading.Lock()
        self._db = db
        self._mode = self.params.mode
        self._generation = 0
        self._version = 0  # map changes made by this session (keyframes added)
        self._saved_version = 0
        self._calibrated_version = 0  # the version the map's calibration was measured at
        self._features = FeatureExtractor(self.params.features)
        self._localizer = Localizer(db, self.params.localizer)
        self._detector = self._new_detector(db, self.params)
        self._gate = KeyframeSelector(self.params.keyframe)
        self._odom = PoseBuffer()
        self._odom_frame = ""
        self._fixes: deque[tuple[float, tuple[float, float, float]]] = deque(maxlen=200)
        self._last_stamp: float | None = None

    @staticmethod
    def _check_map(extractor: Describer, db: MapDatabase) -> None:
        if db.descriptor_dim != extractor.dim:
            raise RecognitionParamError(
                f"the map holds {db.descriptor_dim}-D descriptors but the model makes {extractor.dim}-D ones"
            )

    # ------------------------------------------------------------------ state
    @property
    def mode(self) -> str:
        return self._mode

    @property
    def generation(self) -> int:
        """Incremented whenever the map is replaced or the mode switches."""
        return self._generation

    @property
    def map(self) -> MapDatabase:
        """The current map (replaced by :meth:`replace_map`; do not keep it across calls)."""
        return self._db

    @property
    def unsaved_changes(self) -> int:
        """Keyframes added since the last save or map load (0: nothing to save)."""
        with self._lock:
            return self._version - self._saved_version

    def map_keyframes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, positions (N, 3), stamps) of every keyframe, read consistently."""
        with self._lock:
            ids = self._db.ids
            return ids, self._db.positions(ids), self._db.stamps(ids)

    # ------------------------------------------------------------------ control
    def set_mode(self, mode: str) -> None:
        """Switch mode: temporal state, gate and time rules start over; frames in flight go stale."""
        if mode not in MODES:
            raise RecognitionParamError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        with self._lock:
            if mode == self._mode:
                return
            self._mode = mode
            self.params = replace(self.params, mode=mode)
            self._restart()

    def replace_map(self, db: MapDatabase) -> None:
        """Use another map (e.g. ``~/reload_map``); frames in flight go stale."""
        self._check_map(self.extractor, db)
        with self._lock:
            self._db = db
            self._localizer = Localizer(db, self.params.localizer)
            self._detector = self._new_detector(db, self.params)
            self._version = self._saved_version = self._calibrated_version = 0
            self._restart()

    @staticmethod
    def _new_detector(db: MapDatabase, params: SessionParams) -> LoopClosureDetector:
        return LoopClosureDetector(db, params.loop_closure, body_from_optical=params.camera.body_from_optical)

    def _restart(self) -> None:
        self._generation += 1
        self._odom_arrived.notify_all()  # a frame waiting for odometry goes stale at once
        self._localizer.reset()
        self._detector.reset()
        self._gate.reset()
        self._last_stamp = None

    def configure(self, params: SessionParams) -> None:
        """New thresholds from the next frame on (the mode follows ``params.mode``)."""
        params.validate()
        with self._lock:
            old = self.params
            self.params = params
            if params.localizer != old.localizer:
                self._localizer = Localizer(self._db, params.localizer)
            if params.loop_closure != old.loop_closure:
                self._detector.set_params(params.loop_closure)
            if params.features != old.features:
                self._features = FeatureExtractor(params.features)
            if params.keyframe != old.keyframe:
                self._gate.configure(params.keyframe)
            if params.mode != self._mode:
                self._mode = params.mode
                self._restart()

    # ------------------------------------------------------------------ pose inputs
    def add_odometry(
        self, stamp: float, position: np.ndarray, orientation: np.ndarray, frame_id: str = ""
    ) -> FrameEvent | None:
        """Buffer an odometry pose; returns an event when it was dropped or restarted the buffer."""
        try:
            with self._lock:
                self._odom.add(stamp, position, orientation)
                if frame_id:
                    self._odom_frame = frame_id
                self._odom_arrived.notify_all()
        except PoseOrderError as exc:
            with self._lock:
                self._odom.clear()  # a restarted source (e.g. a looping bag): start over
                try:
                    self._odom.add(stamp, position, orientation)
                except PoseError as again:
                    return FrameEvent("odom_invalid", f"dropped odom message: {again}")
                self._odom_arrived.notify_all()
            return FrameEvent("odom_time_backwards", f"odom time went backwards, pose buffer cleared: {exc}")
        except PoseError as exc:
            return FrameEvent("odom_invalid", f"dropped odom message: {exc}")
        return None

    def add_fix(self, stamp: float, latitude: float, longitude: float, altitude: float) -> FrameEvent | None:
        """Buffer a GPS fix (the caller skips messages without a fix); an event when it is unusable."""
        lla = (float(latitude), float(longitude), float(altitude))
        if (
            not (math.isfinite(stamp) and all(math.isfinite(v) for v in lla))
            or abs(lla[0]) > 90
            or abs(lla[1]) > 360
        ):
            return FrameEvent("gps_invalid", f"dropped NavSatFix with lat/lon/alt {lla}")
        with self._lock:
            self._fixes.append((float(stamp), lla))
        return None

    def _fix_at(self, stamp: float) -> tuple[float, float, float] | None:
        best = min(self._fixes, key=lambda f: abs(f[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > self.params.gps_max_age_s:
            return None
        return best[1]

    # ------------------------------------------------------------------ frames
    def process(
        self,
        stamp: float,
        image: np.ndarray,
        depth: np.ndarray | None = None,
        camera: CameraIntrinsics | None = None,
    ) -> FrameResult:
        """All four steps for one frame (``image``: uint8 BGR or gray, any size; optional aligned
        ``depth`` in metres with NaN for unknown, and the image's ``camera`` intrinsics)."""
        plan = self.begin(stamp, image, depth, camera)
        if isinstance(plan, FrameResult):
            return plan
        prepared = self.prepare(plan)
        return self.finish(plan, self.describe(plan, prepared), prepared)

    def begin(
        self,
        stamp: float,
        image: np.ndarray,
        depth: np.ndarray | None = None,
        camera: CameraIntrinsics | None = None,
    ) -> FramePlan | FrameResult:
        """Step 1: the mode and time rules. A FrameResult when the frame needs no network."""
        t = float(stamp)
        started = time.perf_counter()
        with self._lock:
            mode = self._mode
            if not math.isfinite(t):
                return FrameResult(
                    t, mode, FrameStatus.REJECTED, "invalid_stamp", f"image stamp {t} is not finite"
                )
            events: list[FrameEvent] = []
            if self._last_stamp is not None and t < self._last_stamp:
                if mode == "slam":
                    text = f"dropped image: stamp {t:.3f} is older than the last keyframe's {self._last_stamp:.3f}"
                    return FrameResult(t, mode, FrameStatus.REJECTED, "time_backwards", text)
                events.append(
                    FrameEvent(
                        "time_backwards",
                        f"image time went backwards ({self._last_stamp:.3f} -> {t:.3f}); temporal filter reset",
                    )
                )
                self._localizer.reset()
            if mode == "localization":
                self._last_stamp = t
                return FramePlan(
                    t,
                    mode,
                    self._generation,
                    image,
                    depth=depth,
                    camera=camera,
                    events=tuple(events),
                    started=started,
                )
            plan_generation = self._generation
            p = self.params
            deadline = time.monotonic() + p.odom_wait_s
            while True:  # an odom sample after t lets the pose be interpolated instead of held
                newest = self._odom.newest_stamp
                left = deadline - time.monotonic()
                if (newest is not None and newest >= t) or left <= 0 or plan_generation != self._generation:
                    break
                self._odom_arrived.wait(left)
            if plan_generation != self._generation:
                return FrameResult(
                    t, mode, FrameStatus.STALE, "stale", "dropped image: the mode or map changed"
                )
            pose = self._odom.lookup(t, p.odom_max_age_s)
            if pose is None:
                text = f"dropped image at {t:.3f}: no odom pose within {p.odom_max_age_s} s"
                return FrameResult(t, mode, FrameStatus.REJECTED, "no_odom", text)
            if not self._gate.is_due(t, *pose):
                return FrameResult(t, mode, FrameStatus.NOT_KEYFRAME)
            return FramePlan(
                t,
                mode,
                plan_generation,
                image,
                pose,
                depth,
                camera,
                self._fix_at(t),
                self._odom_frame,
                tuple(events),
                started,
            )

    def prepare(self, plan: FramePlan) -> PreparedFrame:
        """Step 2 (no lock held, any thread): the network input and the image's local features.

        Local features (with depths sampled from ``plan.depth`` and the ``plan.camera``
        intrinsics) are extracted for a keyframe (they are stored with it in the map) and for a
        localization query when the localizer verifies its hypotheses.
        """
        prepare = getattr(self.extractor, "prepare", None)
        net_input = prepare([plan.image]) if prepare is not None else None
        features = None
        if plan.mode == "slam" or self.params.localizer.verify_top_k > 0:
            features = self._features.extract(plan.image, plan.depth, plan.camera)
        return PreparedFrame(net_input, features)

    def describe(self, plan: FramePlan, prepared: PreparedFrame | None = None) -> np.ndarray:
        """Step 3 (no lock held): the global descriptor (from :meth:`prepare`'s output when given)."""
        net_input = prepared.net_input if prepared is not None else None
        run = self.extractor.run if net_input is not None else None  # type: ignore[attr-defined]
        out = run(net_input) if run is not None else self.extractor([plan.image])
        return np.asarray(out[0], dtype=np.float32)

    def finish(
        self, plan: FramePlan, descriptor: np.ndarray, prepared: PreparedFrame | None = None
    ) -> FrameResult:
        """Step 4: localize, or add the keyframe and look for loop closures, unless the frame is stale.

        ``prepared``: :meth:`prepare`'s output (its local features); without it they are
        extracted here (for callers that skip :meth:`prepare`).
        """
        if prepared is None:
            prepared = self.prepare(plan)
        network_done = time.perf_counter()
        with self._lock:
            if plan.generation != self._generation:
                return FrameResult(
                    plan.stamp,
                    plan.mode,
                    FrameStatus.STALE,
                    "stale",
                    "dropped image: the map or mode changed while it was being described",
                    plan.events,
                )
            if plan.mode == "localization":
                res = self._localizer.localize(descriptor, plan.stamp, features=prepared.features)
                parts = self._localizer.last_timings_ms
                out = FrameResult(
                    plan.stamp,
                    plan.mode,
                    FrameStatus.LOCALIZED,
                    events=plan.events,
                    localization=res,
                    descriptor=descriptor,
                )
            else:
                out = self._add_keyframe(plan, descriptor, prepared.features)
                parts = self._detector.last_timings_ms if out.status == FrameStatus.KEYFRAME else {}
        done = time.perf_counter()
        out.timings_ms.update(
            network=(network_done - plan.started) * 1e3 if plan.started else math.nan,
            finish=(done - network_done) * 1e3,
            **parts,
        )
        return out

    def _add_keyframe(
        self, plan: FramePlan, descriptor: np.ndarray, features: KeyframeFeatures | None
    ) -> FrameResult:
        assert plan.pose is not None
        position, orientation = plan.pose
        if not self._gate.is_due(plan.stamp, position, orientation):  # another frame in flight took it
            return FrameResult(plan.stamp, plan.mode, FrameStatus.NOT_KEYFRAME, events=plan.events)
        kf = Keyframe(
            stamp=plan.stamp,
            frame_id=plan.frame_id or "odom",
            position=position,
            orientation=orientation,
            latlonalt=plan.latlonalt,
            source="netvlad_localizer",
        )
        kid = int(self._db.add([kf], descriptor[None, :], features=[features])[0])
        self._gate.take(plan.stamp, position, orientation)
        self._last_stamp = plan.stamp
        self._version += 1
        res = self._detector.process(kid, plan.stamp, descriptor)
        positions: dict[int, np.ndarray] = {}
        if res.accepted:
            ids = [kid] + [lc.match_id for lc in res.accepted]
            positions = dict(zip(ids, self._db.positions(ids), strict=True))
        return FrameResult(
            plan.stamp,
            plan.mode,
            FrameStatus.KEYFRAME,
            events=plan.events,
            keyframe_id=kid,
            loop_closure=res,
            loop_positions=positions,
            descriptor=descriptor,
        )

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path, *, secure_first: bool = False) -> SaveResult:
        """Write the map atomically to ``path``: snapshot under the lock, write without it.

        Saves are serialised (a second caller waits for the first). Frames keep flowing
        while the snapshot is written; changes made after the snapshot stay unsaved.

        When keyframes were added since the map's calibration was measured and
        ``calibrate_on_save`` is on, the snapshot is calibrated from its own poses first
        (``recognition.calibration``; seconds for a few hundred keyframes, on
        ``calibration.workers`` threads), the calibration stored in the saved map and in the
        live one. ``secure_first``: write the keyframes before calibrating and again after
        (the shutdown save: a kill during the calibration then loses no keyframe).
        """
        t0 = time.perf_counter()
        with self._save_lock:
            with self._lock:
                snapshot = self._db.snapshot()
                version, generation = self._version, self._generation
                stale = self.params.calibrate_on_save and version != self._calibrated_version
                cal_params = self.params.calibration
                geometry = self.params.localizer.geometry
                rate = self.params.localizer.target_false_accept_rate
            note, blob = "unchanged", None
            if stale:
                if secure_first:
                    save_snapshot(snapshot, path)
                snapshot, note, blob = _calibrated(snapshot, geometry, cal_params, rate)
            save_snapshot(snapshot, path)
            with self._lock:
                if generation == self._generation:
                    self._saved_version = max(self._saved_version, version)
                    if stale:
                        self._calibrated_version = version
                        if blob is not None:
                            self._db.set_calibration(blob)
        return SaveResult(Path(path), len(snapshot), time.perf_counter() - t0, note)

    def status(self) -> dict[str, Any]:
        """Mode, map size, unsaved changes and the localizer's thresholds (for diagnostics):
        ``calibration`` is :attr:`LocalizerThresholds.status`, the line that says whether the
        map's calibration is used or why the documented fallbacks apply; ``loop_min_score`` the
        loop-closure candidate threshold the last keyframe used (None before one)."""
        with self._lock:
            th = self._localizer.thresholds
            return {
                "mode": self._mode,
                "map_size": len(self._db),
                "generation": self._generation,
                "unsaved_keyframes": self._version - self._saved_version,
                "calibration": th.status,
                "min_inliers": th.min_inliers,
                "min_inliers_source": th.min_inliers_source,
                "loop_min_score": self._detector.last_min_score,
                "loop_min_score_source": "auto" if self.params.loop_closure.min_score == 0 else "explicit",
            }


def _calibrated(
    snapshot: MapSnapshot, geometry: GeometryParams, params: CalibrationParams, rate: float
) -> tuple[MapSnapshot, str, dict[str, Any] | None]:
    """``snapshot`` with a fresh calibration (unchanged when the map cannot be calibrated),
    a line saying what happened, and the blob (None when not calibrated)."""
    cal = calibrate_or_reason(MapDatabase.from_snapshot(snapshot), GeometricVerifier(geometry), params)
    if isinstance(cal, str):
        return snapshot, f"not calibrated: {cal}", None
    blob = cal.to_dict()
    line = f"calibrated on {cal.queries} simulated queries"
    if cal.has_verification:
        line += f" (min_inliers {cal.min_inliers(rate)} at a {rate:g} false-accept rate)"
    return replace(snapshot, calibration_json=canonical_calibration(blob)), line, blob
