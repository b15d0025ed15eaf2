"""Build a map database from a bag or an image folder (``netvlad-ros build-map``).

Inputs (one of):

- a bag (ROS 1 ``.bag``, ROS 2 sqlite3 or MCAP directory) with an image topic
  (``sensor_msgs/Image`` or ``CompressedImage``) and a pose source: a pose topic
  (``NavSatFix``, ``Odometry``, ``PoseStamped``, ``PoseWithCovarianceStamped``), TF
  (``/tf`` + ``/tf_static``, the chain from a fixed frame to the camera frame), or a
  CSV of poses keyed by frame index or stamp (for bags without poses);
- an image folder with a CSV of poses keyed by file name or index, or with
  VPR-benchmark file names ``@utm_east@utm_north@zone@band@...@.jpg``.

Each image gets its pose by interpolation (:class:`netvlad_ros.sensors.poses.PoseTrack`);
images without a pose within ``max_gap_s`` are skipped and counted. Keyframes are
selected with :class:`netvlad_ros.sensors.poses.KeyframeSelector` *before* decoding
(non-keyframes are never decoded), described in batches by the extractor (GPU when
available) and written with JPEG thumbnails in the map-database format. The CSV format and the CLI: docs/build_map.md.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from ..config import add_arguments, from_arguments
from ..mapdb import CameraIntrinsics, IndexConfig, Keyframe, KeyframeFeatures, MapDatabase
from ..mapdb.geodesy import EnuFrame
from ..recognition.calibration import CalibrationParams, calibrate_or_reason
from ..recognition.features import FeatureExtractor, FeatureParams
from ..sensors.camera import CameraParams, intrinsics_for_image
from ..sensors.depth import DepthParams
from ..sensors.image_codec import ImageDecodeError, decode_image_msg
from ..sensors.poses import KeyframeParams, KeyframeSelector, PoseTrack
from .bags import BagDepth, GpsTrack, iter_bag_images, open_bag, read_camera_info, read_pose_topic, read_tf
from .errors import BuildMapError, sensor_errors_as_build_map_errors
from .image_folder import list_images, read_image
from .pose_sources import PoseTable, parse_utm_filename, read_pose_csv

if TYPE_CHECKING:
    from ..model import ExtractorParams

__all__ = [
    "BuildMapError",
    "FrameSource",
    "PosedFrame",
    "add_source_arguments",
    "build_map",
    "make_thumbnail",
    "open_frames",
    "source_from_args",
]

#: Skip reasons reported in the summary.
SKIP_NO_POSE = "no_pose"
SKIP_DECODE = "decode_error"


@dataclass
class FrameSource:
    """Where frames and their poses come from (see the module docstring).

    Exactly one of ``bag`` / ``images``. Pose source: ``pose_topic`` (a bag topic; /tf
    means TF, then ``tf_fixed_frame`` and ``tf_camera_frame`` (default: the image's
    header frame_id) are used), ``poses_csv`` or ``filename_poses``. ``origin``: WGS84
    (lat, lon, alt) of the map frame for GPS input (default: the first fix).
    ``start_index`` / ``max_images`` select a range of frames (0-based, bag order or
    sorted file names). ``stamp_source``: ``header`` or ``bag`` (bag recording time).
    """

    bag: Path | None = None
    images: Path | None = None
    image_topic: str | None = None
    pose_topic: str | None = None
    poses_csv: Path | None = None
    filename_poses: bool = False
    tf_fixed_frame: str | None = None
    tf_camera_frame: str | None = None
    origin: tuple[float, float, float] | None = None
    max_gap_s: float = 0.5
    start_index: int = 0
    max_images: int | None = None
    stamp_source: str = "header"
    require_poses: bool = True
    camera_info_topic: str | None = None
    depth_topic: str | None = None

    def validate(self) -> None:
        """Raise BuildMapError for contradictory or missing options."""
        if (self.bag is None) == (self.images is None):
            raise BuildMapError("give exactly one input: a bag or an image folder")
        sources = [self.pose_topic is not None, self.poses_csv is not None, bool(self.filename_poses)]
        if sum(sources) > 1:
            raise BuildMapError("give one pose source: pose_topic, poses_csv or filename_poses")
        if self.require_poses and not any(sources):
            raise BuildMapError(
                "no pose source: give a pose topic (NavSatFix/Odometry/PoseStamped/PoseWithCovarianceStamped "
                "or /tf), a poses CSV, or filename poses (@utm_east@utm_north@...@.jpg names)"
            )
        if self.bag is not None:
            if not self.image_topic:
                raise BuildMapError("a bag needs an image topic")
            if self.filename_poses:
                raise BuildMapError("filename poses apply to image folders, not bags")
        elif self.pose_topic is not None:
            raise BuildMapError(
                "a pose topic applies to bags; an image folder needs a poses CSV or filename poses"
            )
        if self.bag is None and (self.camera_info_topic or self.depth_topic):
            raise BuildMapError("camera_info and depth topics apply to bags, not image folders")
        if not (np.isfinite(self.max_gap_s) and self.max_gap_s >= 0):
            raise BuildMapError(f"max_gap_s must be finite and >= 0, got {self.max_gap_s!r}")
        if self.start_index < 0 or (self.max_images is not None and self.max_images < 1):
            raise BuildMapError("start_index must be >= 0 and max_images >= 1")
        if (
            self.pose_topic is not None
            and self.pose_topic.rstrip("/").endswith("tf")
            and not self.tf_fixed_frame
        ):
            raise BuildMapError(
                f"pose topic {self.pose_topic!r} is TF: give the fixed frame (tf_fixed_frame)"
            )

    @property
    def uses_tf(self) -> bool:
        """Whether the pose topic is TF (``/tf``, ``/tf_static`` or a namespaced ``.../tf``)."""
        return self.pose_topic is not None and self.pose_topic.rstrip("/").split("/")[-1] in (
            "tf",
            "tf_static",
        )


@dataclass
class PosedFrame:
    """One input frame: position in the input (``index``), ``stamp`` (s), ``source`` (for the
    keyframe), its pose (``ok`` False: none within the gap) and a ``load()`` giving BGR."""

    index: int
    stamp: float
    source: str
    ok: bool
    position: np.ndarray
    orientation: np.ndarray
    latlonalt: tuple[float, float, float] | None
    load: Callable[[], np.ndarray]
    #: aligned depth (metres, NaN unknown) for an image of (width, height), or None
    load_depth: Callable[[int, int], np.ndarray | None] | None = None


@dataclass
class FrameStream:
    """Frames of a source with what the map needs to know about them."""

    frames: Iterator[PosedFrame]
    total: int | None
    frame_id: str = "map"
    origin: tuple[float, float, float] | None = None
    pose_source: str = ""
    notes: list[str] = field(default_factory=list)
    camera: CameraIntrinsics | None = None  # from the bag's camera_info topic
    depth: BagDepth | None = None  # the bag's depth topic, paired by stamp


def _csv_resolver(
    table: PoseTable, max_gap_s: float
) -> Callable[[int, float, str], tuple[bool, np.ndarray, np.ndarray, tuple | None]]:
    if table.key == "stamp":
        track = table.track()

        def by_time(index: int, stamp: float, name: str):
            p, q, ok = track.interpolate(stamp, max_gap_s)
            return bool(ok[0]), p[0], q[0], None

        return by_time
    rows = table.lookup_index()

    def by_row(index: int, stamp: float, name: str):
        r = rows.get(name if table.key == "filename" else index)
        if r is None:
            return False, np.full(3, np.nan), np.full(4, np.nan), None
        lla = tuple(float(v) for v in table.latlonalt[r]) if table.latlonalt is not None else None
        return True, table.positions[r], table.quats[r], lla

    return by_row


def _track_resolver(track: PoseTrack, max_gap_s: float, enu: EnuFrame | None):
    def at(index: int, stamp: float, name: str):
        p, q, ok = track.interpolate(stamp, max_gap_s)
        lla = None
        if ok[0] and enu is not None:
            la, lo, al = enu.to_geodetic(p[0])
            lla = (float(la), float(lo), float(al))
        return bool(ok[0]), p[0], q[0], lla

    return at


@contextlib.contextmanager
def open_frames(src: FrameSource, depth_params: DepthParams | None = None) -> Iterator[FrameStream]:
    """Open ``src`` and yield a :class:`FrameStream` (frames are read lazily).

    Input errors (missing files, unknown topics, wrong types, empty bags, no poses)
    are raised here, before any frame is read, as :class:`BuildMapError`.
    """
    src.validate()
    table = None
    if src.poses_csv is not None:
        table = read_pose_csv(src.poses_csv, src.origin)
        if src.images is None and table.key == "filename":
            raise BuildMapError(
                f"pose CSV {src.poses_csv} is keyed by file name; a bag needs frame index or stamp"
            )
    if src.images is not None:
        yield _folder_stream(src, table)
        return
    assert src.bag is not None and src.image_topic is not None  # validate(): a bag or a folder
    with open_bag(src.bag) as reader:
        images = iter_bag_images(reader, src.image_topic, src.start_index, src.max_images, src.stamp_source)
        first = next(images, None)  # raises for an unknown topic / wrong type / no messages
        if first is None:
            raise BuildMapError(
                f"image topic {src.image_topic!r} has no messages from index {src.start_index}"
            )
        count = int(reader.topics[src.image_topic].msgcount) - src.start_index
        total = max(0, count if src.max_images is None else min(count, src.max_images))
        stream = FrameStream(iter(()), total)
        if src.camera_info_topic:
            stream.camera, invalid = read_camera_info(reader, src.camera_info_topic)
            if invalid:
                stream.notes.append(f"{invalid} invalid camera_info messages before the first valid one")
        if src.depth_topic:
            stream.depth = BagDepth(src.bag, src.depth_topic, depth_params, src.stamp_source)
        resolver: Callable | None = None
        tf_buf = None
        if table is not None:
            resolver = _csv_resolver(table, src.max_gap_s)
            stream.origin = table.origin
            stream.pose_source = f"csv:{src.poses_csv}"
        elif src.uses_tf:
            assert src.pose_topic is not None
            base = src.pose_topic.rstrip("/").removesuffix("_static")
            tf_buf = read_tf(reader, (base, base + "_static"))
            stream.frame_id = str(src.tf_fixed_frame).lstrip("/")
            stream.pose_source = f"tf:{stream.frame_id}->{src.tf_camera_frame or first.frame_id}"
            camera = (src.tf_camera_frame or first.frame_id).lstrip("/")
            if not camera:
                raise BuildMapError(
                    "images have no header frame_id: give the TF camera frame (tf_camera_frame)"
                )
            tf_buf.chain(stream.frame_id, camera)  # unknown or unconnected frames fail now

            def resolver(index: int, stamp: float, name: str):
                p, q, ok = tf_buf.lookup(stream.frame_id, camera, stamp, src.max_gap_s)
                return bool(ok[0]), p[0], q[0], None

        elif src.pose_topic is not None:
            track = read_pose_topic(reader, src.pose_topic, src.stamp_source)
            enu = None
            if isinstance(track, GpsTrack):
                if track.dropped:
                    stream.notes.append(f"{track.dropped} NavSatFix messages without a fix were ignored")
                track, stream.origin = track.to_pose_track(src.origin)
                enu = EnuFrame(*stream.origin)
            else:
                stream.frame_id = track.frame_id
            resolver = _track_resolver(track, src.max_gap_s, enu)
            stream.pose_source = f"topic:{src.pose_topic}"

        def frames() -> Iterator[PosedFrame]:
            seq = [first] if first is not None else []
            for item in itertools.chain(seq, images):
                if resolver is None:
                    ok, p, q, lla = False, np.full(3, np.nan), np.full(4, np.nan), None
                else:
                    ok, p, q, lla = resolver(item.index, item.stamp, "")
                msg = item.msg
                depth = stream.depth
                yield PosedFrame(
                    item.index,
                    item.stamp,
                    f"{src.image_topic}#{item.index}",
                    ok,
                    np.asarray(p, np.float64),
                    np.asarray(q, np.float64),
                    lla,
                    functools.partial(decode_image_msg, msg),
                    None if depth is None else functools.partial(depth.at, item.stamp),
                )

        stream.frames = frames()
        try:
            yield stream
        finally:
            if stream.depth is not None:
                stream.depth.close()


def _folder_stream(src: FrameSource, table: PoseTable | None) -> FrameStream:
    assert src.images is not None
    folder = Path(src.images)
    try:
        files = list_images(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise BuildMapError(str(exc)) from exc
    end = None if src.max_images is None else src.start_index + src.max_images
    indexed = list(enumerate(files))[src.start_index : end]
    stream = FrameStream(iter(()), len(indexed))
    resolver = None
    if table is not None:
        if table.key == "stamp":
            raise BuildMapError(
                f"pose CSV {src.poses_csv} is keyed by stamp only; an image folder needs a filename or index column"
            )
        resolver = _csv_resolver(table, src.max_gap_s)
        stream.origin = table.origin
        stream.pose_source = f"csv:{src.poses_csv}"
        if table.key == "filename":
            rels = {str(f.relative_to(folder)) for f in files} | {f.name for f in files}
            if not any(n in rels for n in table.names or []):
                raise BuildMapError(f"no file name in pose CSV {src.poses_csv} matches an image in {folder}")
    elif src.filename_poses:
        stream.pose_source = "filename:utm"
        for _, f in indexed:
            parse_utm_filename(f.name)  # fail on the first bad name before any work
        stream.frame_id = "utm"

    rows = table.lookup_index() if table is not None else {}
    names = set(table.names or []) if table is not None else set()

    def frames() -> Iterator[PosedFrame]:
        for i, f in indexed:
            rel = str(f.relative_to(folder))
            stamp, lla = float(i), None
            if src.filename_poses:
                e, n = parse_utm_filename(f.name)
                ok, p, q = True, np.array([e, n, 0.0]), np.array([0.0, 0.0, 0.0, 1.0])
            elif resolver is not None and table is not None:
                name = rel if rel in names else f.name
                r = rows.get(name if table.key == "filename" else i)
                if r is not None and table.stamps is not None:
                    stamp = float(table.stamps[r])
                ok, p, q, lla = resolver(i, stamp, name)
            else:
                ok, p, q = False, np.full(3, np.nan), np.full(4, np.nan)
            yield PosedFrame(
                i,
                stamp,
                rel,
                ok,
                np.asarray(p, np.float64),
                np.asarray(q, np.float64),
                lla,
                functools.partial(read_image, f),
            )

    stream.frames = frames()
    return stream


def make_thumbnail(image: np.ndarray, width: int = 160, quality: int = 80) -> bytes:
    """A JPEG thumbnail ``width`` pixels wide (aspect kept) of a BGR image."""
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - any uint8 BGR image encodes
        raise BuildMapError("OpenCV failed to encode a thumbnail")
    return buf.tobytes()


def _make_extractor(
    model: str | Path | None,
    device: str | None,
    batch_size: int | None,
    fp16: bool | None = None,
    params: ExtractorParams | None = None,
) -> Any:
    """The extractor for ``model`` from ``params`` (ExtractorParams), any non-None keyword over it."""
    from ..model import DescriptorExtractor

    return DescriptorExtractor(model, params, device=device, fp16=fp16, batch_size=batch_size)


def build_map(
    output: str | Path,
    source: FrameSource,
    *,
    keyframes: KeyframeParams | None = None,
    model: str | Path | None = None,
    device: str | None = None,
    fp16: bool | None = None,
    batch_size: int | None = None,
    extractor_params: ExtractorParams | None = None,
    extractor: Any = None,
    index_config: IndexConfig | None = None,
    thumbnail_width: int = 160,
    features: FeatureParams | None = None,
    local_features: bool = True,
    camera: CameraParams | None = None,
    depth: DepthParams | None = None,
    calibration: CalibrationParams | None = None,
    progress: bool = True,
) -> dict:
    """Build a map from ``source`` and save it to the directory ``output``; returns a summary.

    Keyframes: ``keyframes`` thresholds (:class:`netvlad_ros.sensors.poses.KeyframeParams`; 0 turns
    one off, all off keeps every frame; the node's defaults when None). ``extractor`` (a
    ``DescriptorExtractor``) overrides ``model`` / ``extractor_params`` (``ExtractorParams``: runtime,
    threads, input size, ...); ``device`` / ``fp16`` / ``batch_size``, when not None, override those
    fields. Summary keys: ``output``, ``pose_source``,
    ``images_read``, ``keyframes``, ``not_selected`` (had a pose but were too close to
    the last keyframe), ``skipped`` ({reason: count}: ``no_pose``, ``decode_error``),
    ``decode_errors`` (first messages), ``seconds``, ``images_per_second``,
    ``read_seconds`` (bag reading and deserialising), ``decode_seconds`` (image
    decoding and thumbnails), ``network_seconds``, ``write_seconds``, ``device``,
    ``dim``, ``model_fingerprint``, ``origin``, ``frame_id``, ``notes``, ``features`` (keyframes
    with local features / with depths, seconds), ``calibration`` (summary, or why the map could
    not be calibrated), ``depth_pairing`` (failed pairings by reason).

    Local features (``local_features``, ``features``: ORB by default) are extracted from each
    keyframe's full-resolution image, with depths from ``source.depth_topic`` (paired by stamp,
    ``depth``) and the intrinsics of ``source.camera_info_topic`` (else ``camera``'s fallback),
    and stored in the map, so localization against it is verified and loop closures against
    it work. Then the map calibrates itself from its own poses (``recognition.calibration``).
    """
    if batch_size is not None and batch_size < 1:
        raise BuildMapError(f"batch_size must be >= 1, got {batch_size}")
    with sensor_errors_as_build_map_errors():
        selector = KeyframeSelector(keyframes)
    t_start = time.perf_counter()
    fx = FeatureExtractor(features) if local_features else None
    camera_params = camera or CameraParams()
    with sensor_errors_as_build_map_errors():
        camera_params.validate()
    feat_s = 0.0
    with_depth = 0
    with open_frames(source, depth) as stream:
        ex = (
            extractor
            if extractor is not None
            else _make_extractor(model, device, batch_size, fp16, extractor_params)
        )
        db = MapDatabase.create(ex.dim, ex.fingerprint, index_config)
        if stream.origin is not None:
            db.set_origin(*stream.origin)
        skipped: Counter[str] = Counter()
        decode_errors: list[str] = []
        read_s = decode_s = net_s = 0.0
        n_read = not_selected = 0
        batch_kf: list[Keyframe] = []
        batch_img: list[np.ndarray] = []
        batch_feat: list[KeyframeFeatures | None] = []

        def flush() -> None:
            nonlocal net_s
            if not batch_img:
                return
            t0 = time.perf_counter()
            desc = ex(batch_img)
            net_s += time.perf_counter() - t0
            db.add(batch_kf, desc, features=batch_feat)
            batch_kf.clear()
            batch_img.clear()
            batch_feat.clear()

        bar = tqdm(total=stream.total, unit="img", desc="build-map", disable=not progress)
        it = stream.frames
        while True:
            t0 = time.perf_counter()
            frame = next(it, None)
            read_s += time.perf_counter() - t0
            if frame is None:
                break
            n_read += 1
            bar.update(1)
            if not frame.ok:
                skipped[SKIP_NO_POSE] += 1
                continue
            if not selector.is_due(frame.stamp, frame.position, frame.orientation):
                not_selected += 1
                continue
            t0 = time.perf_counter()
            try:
                image = frame.load()
                thumb = make_thumbnail(image, thumbnail_width)
            except (ImageDecodeError, ValueError) as exc:
                decode_s += time.perf_counter() - t0
                skipped[SKIP_DECODE] += 1
                if len(decode_errors) < 10:
                    decode_errors.append(f"{frame.source}: {exc}")
                continue
            decode_s += time.perf_counter() - t0
            feats = None
            if fx is not None:
                t0 = time.perf_counter()
                h, w = image.shape[:2]
                cam = _camera_for(stream.camera, camera_params, w, h)
                dep = frame.load_depth(w, h) if frame.load_depth is not None else None
                feats = fx.extract(image, dep, cam)
                with_depth += feats.depths is not None and bool(np.isfinite(feats.depths).any())
                feat_s += time.perf_counter() - t0
            selector.take(frame.stamp, frame.position, frame.orientation)
            batch_kf.append(
                Keyframe(
                    stamp=frame.stamp,
                    frame_id=stream.frame_id,
                    position=frame.position,
                    orientation=frame.orientation,
                    latlonalt=frame.latlonalt,
                    source=frame.source,
                    thumbnail=thumb,
                )
            )
            batch_img.append(image)
            batch_feat.append(feats)
            if len(batch_img) >= ex.batch_size:
                flush()
                bar.set_postfix(keyframes=len(db))
        flush()
        bar.close()
        depth_counts = stream.depth.counts if stream.depth is not None else {}
    if n_read == 0:
        raise BuildMapError("the input has no images in the selected range")
    if len(db) == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "none"
        raise BuildMapError(f"no keyframes: all {n_read} images were skipped ({reasons})")
    t_cal = time.perf_counter()
    cal_summary = calibrate_map(db, calibration)
    cal_s = time.perf_counter() - t_cal
    t0 = time.perf_counter()
    db.save(output)
    write_s = time.perf_counter() - t0
    seconds = time.perf_counter() - t_start
    return {
        "output": str(output),
        "pose_source": stream.pose_source,
        "images_read": n_read,
        "keyframes": len(db),
        "not_selected": not_selected,
        "skipped": dict(sorted(skipped.items())),
        "decode_errors": decode_errors,
        "seconds": seconds,
        "images_per_second": n_read / seconds if seconds > 0 else float("inf"),
        "read_seconds": read_s,
        "decode_seconds": decode_s,
        "network_seconds": net_s,
        "write_seconds": write_s,
        "device": str(getattr(ex, "device", "")),
        "dim": int(ex.dim),
        "model_fingerprint": ex.fingerprint,
        "origin": list(stream.origin) if stream.origin is not None else None,
        "frame_id": stream.frame_id,
        "notes": stream.notes,
        "features": {
            "keyframes_with_features": db.count_with_features(),
            "keyframes_with_depth": with_depth,
            "seconds": feat_s,
        },
        "calibration": {**cal_summary, "seconds": cal_s},
        "depth_pairing": {k: v for k, v in depth_counts.items() if v},
    }


def calibrate_map(db: MapDatabase, params: CalibrationParams | None = None) -> dict[str, Any]:
    """Calibrate ``db`` from its own poses and store the calibration in it (``recognition.calibration``).

    Returns the calibration's summary, or ``{"calibrated": False, "reason": ...}`` when the map
    is too small or too short (the localizer then uses its documented fallbacks).
    """
    cal = calibrate_or_reason(db, None, params)
    if isinstance(cal, str):
        db.set_calibration(None)
        return {"calibrated": False, "reason": cal}
    db.set_calibration(cal.to_dict())
    return {"calibrated": True, **cal.summary()}


def _camera_for(
    stream_camera: CameraIntrinsics | None, fallback: CameraParams, width: int, height: int
) -> CameraIntrinsics | None:
    """The intrinsics of an image: the bag's camera_info (scaled to a resize), else the fallback."""
    if stream_camera is not None:
        with sensor_errors_as_build_map_errors():
            return intrinsics_for_image(stream_camera, width, height)
    return fallback.intrinsics(width, height)


def format_summary(summary: dict) -> str:
    """Human-readable lines for a :func:`build_map` summary (printed by the CLI)."""
    s = summary
    skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"
    busy = s["read_seconds"] + s["decode_seconds"] + s["network_seconds"]
    share = (lambda x: 100.0 * x / busy) if busy > 0 else (lambda x: 0.0)
    lines = [
        f"map written to {s['output']} ({s['keyframes']} keyframes, {s['dim']}-D, device {s['device']})",
        f"images read {s['images_read']}, keyframes {s['keyframes']}, not selected {s['not_selected']}, "
        f"skipped: {skipped}",
        f"throughput {s['images_per_second']:.1f} img/s over {s['seconds']:.1f} s; time: read "
        f"{s['read_seconds']:.2f} s ({share(s['read_seconds']):.0f}%), decode {s['decode_seconds']:.2f} s "
        f"({share(s['decode_seconds']):.0f}%), network {s['network_seconds']:.2f} s "
        f"({share(s['network_seconds']):.0f}%), write {s['write_seconds']:.2f} s",
    ]
    f = s.get("features", {})
    if f:
        lines.append(
            f"local features: {f['keyframes_with_features']} keyframes ({f['keyframes_with_depth']} with depth), "
            f"{f['seconds']:.2f} s"
        )
    c = s.get("calibration", {})
    if c:
        lines.append(
            "calibration: from the map's own poses"
            if c.get("calibrated")
            else f"calibration: none ({c.get('reason')})"
        )
    if s.get("depth_pairing"):
        lines.append(f"depth pairing failures: {s['depth_pairing']}")
    lines += [f"note: {n}" for n in s.get("notes", [])]
    lines += [f"decode error: {e}" for e in s.get("decode_errors", [])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI helpers


def add_source_arguments(parser: Any) -> None:
    """Add the input / pose / range options shared by ``build-map`` and ``eval-map``."""
    g = parser.add_argument_group("input")
    g.add_argument("--bag", type=Path, help="ROS 1 .bag file or ROS 2 bag directory (sqlite3 or MCAP)")
    g.add_argument("--images", type=Path, help="image folder (instead of a bag)")
    g.add_argument("--image-topic", help="image topic (sensor_msgs/Image or CompressedImage)")
    g.add_argument(
        "--pose-topic",
        help="NavSatFix, Odometry, PoseStamped or PoseWithCovarianceStamped topic, or /tf for TF",
    )
    g.add_argument("--poses-csv", type=Path, help="CSV of poses (see docs/build_map.md)")
    g.add_argument(
        "--filename-poses", action="store_true", help="positions from @utm_east@utm_north@...@.jpg file names"
    )
    g.add_argument("--tf-fixed-frame", help="TF: the map frame (e.g. map or odom)")
    g.add_argument("--tf-camera-frame", help="TF: the camera frame (default: the images' frame_id)")
    g.add_argument(
        "--origin", type=float, nargs=3, metavar=("LAT", "LON", "ALT"), help="GPS origin (default: first fix)"
    )
    g.add_argument("--max-gap", type=float, default=0.5, help="max seconds between an image and its poses")
    g.add_argument("--start-index", type=int, default=0, help="first frame to use (0-based)")
    g.add_argument("--max-images", type=int, default=None, help="use at most this many frames")
    g.add_argument("--stamp-source", choices=("header", "bag"), default="header")
    g.add_argument("--camera-info-topic", help="bag: sensor_msgs/CameraInfo of the images (intrinsics)")
    g.add_argument(
        "--depth-topic", help="bag: aligned depth images (16UC1 mm or 32FC1 m) for metric loop closures"
    )


def source_from_args(args: Any, require_poses: bool = True) -> FrameSource:
    """A :class:`FrameSource` from the options of :func:`add_source_arguments`."""
    return FrameSource(
        bag=args.bag,
        images=args.images,
        image_topic=args.image_topic,
        pose_topic=args.pose_topic,
        poses_csv=args.poses_csv,
        filename_poses=args.filename_poses,
        tf_fixed_frame=args.tf_fixed_frame,
        tf_camera_frame=args.tf_camera_frame,
        origin=tuple(args.origin) if args.origin else None,
        max_gap_s=args.max_gap,
        start_index=args.start_index,
        max_images=args.max_images,
        stamp_source=args.stamp_source,
        require_poses=require_poses,
        camera_info_topic=getattr(args, "camera_info_topic", None),
        depth_topic=getattr(args, "depth_topic", None),
    )


def add_model_arguments(parser: Any) -> None:
    """``--model`` and the extractor's options (``ExtractorParams``: ``--device --runtime --fp16
    --threads --max-side --batch-size``) that every describing command takes; read them back
    with :func:`extractor_params_from_args`."""
    from ..model import ExtractorParams

    parser.add_argument(
        "--model", type=Path, default=None, help="model file (.safetensors); default: built-in"
    )
    add_arguments(parser, ExtractorParams)


def extractor_params_from_args(args: Any) -> ExtractorParams:
    """The ``ExtractorParams`` of the options of :func:`add_model_arguments` (validated)."""
    from ..model import ExtractorParams

    params = from_arguments(ExtractorParams, args)
    params.validate()
    return params


def add_build_map_arguments(parser: Any) -> None:
    """All ``build-map`` options (call :func:`build_map_from_args` with the parsed namespace)."""
    parser.add_argument("output", type=Path, help="map directory to write")
    add_source_arguments(parser)
    k = parser.add_argument_group("keyframes (a frame is kept when ANY threshold is reached; 0 = off)")
    add_arguments(k, KeyframeParams, "keyframe.")
    f = parser.add_argument_group("local features (stored per keyframe; verification, metric loop closures)")
    f.add_argument(
        "--no-local-features", action="store_true", help="store no local features (not verifiable)"
    )
    add_arguments(f, FeatureParams, "features.")
    add_arguments(f, DepthParams, "depth.", only=("depth.tolerance_s",))
    c = parser.add_argument_group("camera (fallback intrinsics when the bag has no camera_info)")
    add_arguments(
        c, CameraParams, "camera.", only=[f"camera.{n}" for n in ("fx", "fy", "cx", "cy", "width", "height")]
    )
    add_model_arguments(parser.add_argument_group("model"))
    parser.add_argument("--thumbnail-width", type=int, default=160)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_map_from_args(args: Any) -> dict:
    """Run :func:`build_map` from the namespace of :func:`add_build_map_arguments`."""

    return build_map(
        args.output,
        source_from_args(args),
        keyframes=from_arguments(KeyframeParams, args, "keyframe."),
        features=from_arguments(FeatureParams, args, "features."),
        local_features=not args.no_local_features,
        camera=from_arguments(CameraParams, args, "camera."),
        depth=from_arguments(DepthParams, args, "depth."),
        model=args.model,
        extractor_params=extractor_params_from_args(args),
        thumbnail_width=args.thumbnail_width,
        progress=not args.quiet,
    )
