"""Place-recognition datasets: database and query images with planar (UTM-like) positions.

Every reader returns a :class:`PlaceDataset`, the one structure training and
evaluation use: database images + (N, 2) positions in metres, query images +
(Q, 2) positions, and the distance thresholds (``pos_dist_thr``: a database
image within this distance of a query shows the same place, 25 m for Pittsburgh
and Tokyo 24/7; ``nontriv_pos_dist_sq_thr``: squared distance for the
training's potential positives, 10 m² = 100 in the official files).

Readers:

- :func:`read_mat_dataset` / :func:`read_pittsburgh` / :func:`read_tokyo247`:
  the official ``dbStruct`` .mat files of Pittsburgh 250k/30k and Tokyo 24/7
  (Arandjelović et al., https://www.di.ens.fr/willow/research/netvlad/). The
  struct's fields, in order: ``whichSet``, ``dbImageFns`` (cell, N×1),
  ``utmDb`` (2×N), ``qImageFns`` (cell, Q×1), ``utmQ`` (2×Q), ``numImages``,
  ``numQueries``, ``posDistThr``, ``posDistSqThr``, ``nonTrivPosDistSqThr``
  (Tokyo files may add time stamps: ignored). Read with ``scipy.io.loadmat``.
- :func:`read_folder_dataset`: the folder layout used by the VPR benchmarks
  (``images/{train,val,test}/{database,queries}/@utm_east@utm_north@...@.jpg``).
- :func:`read_map_dataset`: maps written by ``build-map``. A map stores small
  JPEG thumbnails, not the full images, so this dataset trains/evaluates at
  thumbnail resolution; queries are a second map of another traversal (or a
  folder in the benchmark naming). For full resolution, export the frames into
  the benchmark folder layout instead.
- :func:`dataset_from_arrays`: images already in memory (synthetic data, tests).

Bad input raises :class:`DatasetError` (a ValueError) naming the file or field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

from .image_folder import list_images, read_image

# A database/query image: a file, an in-memory BGR uint8 array, or encoded (JPEG/PNG) bytes.
ImageSource = Union[Path, np.ndarray, bytes]  # noqa: UP007 (runtime alias, py3.10)

DEFAULT_POS_DIST_THR = 25.0
DEFAULT_NONTRIV_POS_DIST_SQ_THR = 100.0
MAT_FIELDS = (
    "whichSet",
    "dbImageFns",
    "utmDb",
    "qImageFns",
    "utmQ",
    "numImages",
    "numQueries",
    "posDistThr",
    "posDistSqThr",
    "nonTrivPosDistSqThr",
)


class DatasetError(ValueError):
    """A dataset file, folder or split is missing, malformed or empty; the message names it."""


def load_image_source(src: ImageSource) -> np.ndarray:
    """Decode one :data:`ImageSource` to a uint8 BGR array (files via ``read_image``)."""
    if isinstance(src, np.ndarray):
        return src
    if isinstance(src, (bytes, bytearray)):
        image = cv2.imdecode(np.frombuffer(src, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError("cannot decode in-memory image bytes")
        return image
    return read_image(src)


@dataclass
class PlaceDataset:
    """Database and query images with positions in metres (east, north) and thresholds."""

    name: str
    split: str
    db_images: list[ImageSource]
    db_utm: np.ndarray
    q_images: list[ImageSource]
    q_utm: np.ndarray
    pos_dist_thr: float = DEFAULT_POS_DIST_THR
    nontriv_pos_dist_sq_thr: float = DEFAULT_NONTRIV_POS_DIST_SQ_THR
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.db_utm = np.asarray(self.db_utm, dtype=np.float64).reshape(-1, 2)
        self.q_utm = np.asarray(self.q_utm, dtype=np.float64).reshape(-1, 2)
        self.validate()

    @property
    def num_db(self) -> int:
        return len(self.db_images)

    @property
    def num_queries(self) -> int:
        return len(self.q_images)

    def validate(self) -> None:
        """Raise DatasetError naming the first inconsistency (sizes, empty splits, non-finite positions)."""
        where = f"dataset {self.name!r} split {self.split!r}"
        if not self.db_images:
            raise DatasetError(f"{where}: the database is empty")
        if not self.q_images:
            raise DatasetError(f"{where}: there are no queries")
        if len(self.db_images) != len(self.db_utm):
            raise DatasetError(
                f"{where}: {len(self.db_images)} database images but {len(self.db_utm)} positions"
            )
        if len(self.q_images) != len(self.q_utm):
            raise DatasetError(f"{where}: {len(self.q_images)} queries but {len(self.q_utm)} positions")
        if not (np.isfinite(self.db_utm).all() and np.isfinite(self.q_utm).all()):
            raise DatasetError(f"{where}: positions contain NaN or Inf")
        if not self.pos_dist_thr > 0 or not self.nontriv_pos_dist_sq_thr > 0:
            raise DatasetError(f"{where}: distance thresholds must be positive")

    def db_image(self, i: int) -> np.ndarray:
        """Database image ``i`` as uint8 BGR."""
        return load_image_source(self.db_images[i])

    def query_image(self, i: int) -> np.ndarray:
        """Query image ``i`` as uint8 BGR."""
        return load_image_source(self.q_images[i])

    def check_files(self) -> None:
        """Raise DatasetError naming the first image file that does not exist."""
        for kind, items in (("database", self.db_images), ("query", self.q_images)):
            for src in items:
                if isinstance(src, Path) and not src.is_file():
                    raise DatasetError(
                        f"dataset {self.name!r} split {self.split!r}: {kind} image not found: {src}"
                    )

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (for model provenance and logs)."""
        return {
            "name": self.name,
            "split": self.split,
            "database": self.num_db,
            "queries": self.num_queries,
            "pos_dist_thr": self.pos_dist_thr,
            "nontriv_pos_dist_sq_thr": self.nontriv_pos_dist_sq_thr,
            **self.info,
        }


# --------------------------------------------------------------------------- official .mat files


def _mat_strings(value: Any, field_name: str, path: Path) -> list[str]:
    """A MATLAB cell array of strings (as loadmat returns it) -> list of str."""
    arr = np.asarray(value, dtype=object).reshape(-1)
    out = []
    for i, item in enumerate(arr):
        item = np.asarray(item).reshape(-1)
        if item.size != 1 or not isinstance(item[0], str):
            raise DatasetError(f"{path}: dbStruct.{field_name}[{i}] is not a string")
        out.append(item[0])
    return out


def _mat_scalar(value: Any, field_name: str, path: Path) -> float:
    arr = np.asarray(value).reshape(-1)
    if arr.size != 1:
        raise DatasetError(f"{path}: dbStruct.{field_name} must be a scalar, got shape {np.shape(value)}")
    try:
        return float(arr[0])
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: dbStruct.{field_name} is not a number") from exc


def _mat_utm(value: Any, n: int, field_name: str, path: Path) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64) if np.asarray(value).dtype != object else None
    if arr is None or arr.ndim != 2 or 2 not in arr.shape:
        raise DatasetError(f"{path}: dbStruct.{field_name} must be a 2xN matrix, got {np.shape(value)}")
    if arr.shape[0] == 2 and arr.shape[1] == n:
        return arr.T.copy()
    if arr.shape == (n, 2):
        return arr.copy()
    raise DatasetError(f"{path}: dbStruct.{field_name} has shape {arr.shape}, expected (2, {n})")


def read_mat_dataset(
    mat_path: str | Path,
    db_root: str | Path,
    query_root: str | Path,
    name: str | None = None,
    check_files: bool = True,
) -> PlaceDataset:
    """Read an official ``dbStruct`` .mat file; image names are resolved under the two roots.

    Raises DatasetError for a missing/unreadable file, a missing ``dbStruct``,
    malformed fields, sizes that disagree with ``numImages``/``numQueries``, an
    empty split, or (``check_files``) the first image file that does not exist.
    """
    from scipy.io import loadmat

    path = Path(mat_path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for garbage input
        raise DatasetError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    if "dbStruct" not in mat:
        raise DatasetError(
            f"{path}: no 'dbStruct' variable (found {sorted(k for k in mat if not k.startswith('__'))})"
        )
    struct = mat["dbStruct"]
    if struct.dtype.names is None or struct.size != 1:
        raise DatasetError(f"{path}: 'dbStruct' is not a 1x1 MATLAB struct")
    names = struct.dtype.names
    record = struct.reshape(-1)[0]
    if all(f in names for f in MAT_FIELDS):
        values = {f: record[f] for f in MAT_FIELDS}
    elif len(names) >= len(MAT_FIELDS):  # unnamed/renamed fields: the official order
        values = {f: record[i] for i, f in enumerate(MAT_FIELDS)}
    else:
        missing = [f for f in MAT_FIELDS if f not in names]
        raise DatasetError(f"{path}: dbStruct lacks the fields {', '.join(missing)}")
    which = np.asarray(values["whichSet"]).reshape(-1)
    split = str(which[0]) if which.size else ""
    db_names = _mat_strings(values["dbImageFns"], "dbImageFns", path)
    q_names = _mat_strings(values["qImageFns"], "qImageFns", path)
    if not db_names:
        raise DatasetError(f"{path}: the database (dbImageFns) is empty")
    if not q_names:
        raise DatasetError(f"{path}: there are no queries (qImageFns is empty)")
    for count_field, names_list in (("numImages", db_names), ("numQueries", q_names)):
        if int(_mat_scalar(values[count_field], count_field, path)) != len(names_list):
            raise DatasetError(f"{path}: dbStruct.{count_field} disagrees with the number of image names")
    db_utm = _mat_utm(values["utmDb"], len(db_names), "utmDb", path)
    q_utm = _mat_utm(values["utmQ"], len(q_names), "utmQ", path)
    db_root, query_root = Path(db_root), Path(query_root)
    ds = PlaceDataset(
        name=name or path.stem,
        split=split,
        db_images=[db_root / n for n in db_names],
        db_utm=db_utm,
        q_images=[query_root / n for n in q_names],
        q_utm=q_utm,
        pos_dist_thr=_mat_scalar(values["posDistThr"], "posDistThr", path),
        nontriv_pos_dist_sq_thr=_mat_scalar(values["nonTrivPosDistSqThr"], "nonTrivPosDistSqThr", path),
        info={"source": str(path)},
    )
    if check_files:
        ds.check_files()
    return ds


def read_pittsburgh(
    root: str | Path, split: str = "pitts30k_train", check_files: bool = True
) -> PlaceDataset:
    """Pittsburgh 30k/250k as distributed: ``root/datasets/{split}.mat``, database images
    under ``root/`` (``000/000000_pitch1_yaw1.jpg``...), queries under ``root/queries_real/``.

    ``split``: pitts30k_{train,val,test} or pitts250k_{train,val,test}.
    """
    root = Path(root)
    return read_mat_dataset(
        root / "datasets" / f"{split}.mat", root, root / "queries_real", split, check_files
    )


def read_tokyo247(
    root: str | Path, query_dir: str = "247query_subset_v2", check_files: bool = True
) -> PlaceDataset:
    """Tokyo 24/7: ``root/datasets/tokyo247.mat``, database under ``root/``, queries under
    ``root/{query_dir}`` (the official query archive unpacks to 247query_subset_v2)."""
    root = Path(root)
    return read_mat_dataset(
        root / "datasets" / "tokyo247.mat", root, root / query_dir, "tokyo247", check_files
    )


# --------------------------------------------------------------------------- benchmark folders


def utm_from_filename(path: Path) -> tuple[float, float]:
    """(east, north) from a benchmark file name ``@utm_east@utm_north@...``; DatasetError if not."""
    parts = path.name.split("@")
    if len(parts) < 3 or parts[0] != "":
        raise DatasetError(f"image name {path.name!r} is not in the '@utm_east@utm_north@...' form ({path})")
    try:
        east, north = float(parts[1]), float(parts[2])
    except ValueError as exc:
        raise DatasetError(f"image name {path.name!r}: UTM east/north are not numbers ({path})") from exc
    if not (np.isfinite(east) and np.isfinite(north)):
        raise DatasetError(f"image name {path.name!r}: UTM east/north are not finite ({path})")
    return east, north


def _folder_images(folder: Path) -> tuple[list[Path], np.ndarray]:
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    try:
        files = list_images(folder)
    except ValueError as exc:
        raise DatasetError(f"empty split: {exc}") from exc
    return files, np.array([utm_from_filename(f) for f in files], dtype=np.float64).reshape(-1, 2)


def read_folder_dataset(
    root: str | Path,
    split: str = "test",
    pos_dist_thr: float = DEFAULT_POS_DIST_THR,
    nontriv_pos_dist_sq_thr: float = DEFAULT_NONTRIV_POS_DIST_SQ_THR,
) -> PlaceDataset:
    """Read ``root/images/{split}/{database,queries}/`` in the VPR benchmark naming."""
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise DatasetError(f"split must be train, val or test, got {split!r}")
    base = root / "images" / split
    db_files, db_utm = _folder_images(base / "database")
    q_files, q_utm = _folder_images(base / "queries")
    return PlaceDataset(
        root.name, split, list(db_files), db_utm, list(q_files), q_utm, pos_dist_thr, nontriv_pos_dist_sq_thr,
        info={"source": str(base)},
    )  # fmt: skip


# --------------------------------------------------------------------------- maps from build-map


def _map_rows(map_path: Path) -> tuple[Any, list[bytes], np.ndarray]:
    from ..mapdb import MapDatabase

    try:
        db = MapDatabase.load(map_path)
    except ValueError as exc:
        raise DatasetError(f"cannot read map {map_path}: {exc}") from exc
    ids = db.ids
    thumbs, pos = [], []
    for kid in ids:
        kf = db.keyframe(int(kid))
        if kf.thumbnail is None:
            raise DatasetError(
                f"map {map_path}: keyframe {int(kid)} has no thumbnail (build the map with thumbnails)"
            )
        thumbs.append(bytes(kf.thumbnail))
        pos.append(kf.position[:2])
    if not thumbs:
        raise DatasetError(f"map {map_path} has no keyframes")
    return db, thumbs, np.asarray(pos, dtype=np.float64).reshape(-1, 2)


def read_map_dataset(
    map_path: str | Path,
    queries: str | Path,
    pos_dist_thr: float = DEFAULT_POS_DIST_THR,
    nontriv_pos_dist_sq_thr: float = DEFAULT_NONTRIV_POS_DIST_SQ_THR,
) -> PlaceDataset:
    """Database = keyframes of a ``build-map`` map (thumbnails + map-frame x, y).

    ``queries``: a second map directory (another traversal) or a folder of
    images named ``@east@north@...`` in the same metric frame. When both maps
    have a GPS origin, query positions are moved into the database map's frame
    through WGS84; otherwise the two maps must share their frame (e.g. poses
    from one SLAM session or localised against the same map). Limitation: maps
    hold only thumbnails, so training runs at thumbnail resolution.
    """
    map_path, queries = Path(map_path), Path(queries)
    db, db_thumbs, db_xy = _map_rows(map_path)
    if (queries / "manifest.json").is_file() or (queries.is_dir() and any(queries.glob("*.sqlite*"))):
        qdb, q_imgs, q_xy = _map_rows(queries)
        if db.origin is not None and qdb.origin is not None and db.origin != qdb.origin:
            q_xy = np.array(
                [db.geo_to_local(*qdb.keyframe(int(k)).latlonalt)[:2] for k in qdb.ids], dtype=np.float64
            )
        q_sources: list[ImageSource] = list(q_imgs)
    else:
        files, q_xy = _folder_images(queries)
        q_sources = list(files)
    return PlaceDataset(
        map_path.name, "map", list(db_thumbs), db_xy, q_sources, q_xy, pos_dist_thr, nontriv_pos_dist_sq_thr,
        info={"source": str(map_path), "queries": str(queries), "resolution": "thumbnails"},
    )  # fmt: skip


# --------------------------------------------------------------------------- in memory, and from a spec


def dataset_from_arrays(
    db_images: Sequence[np.ndarray],
    db_utm: np.ndarray,
    q_images: Sequence[np.ndarray],
    q_utm: np.ndarray,
    name: str = "arrays",
    split: str = "",
    pos_dist_thr: float = DEFAULT_POS_DIST_THR,
    nontriv_pos_dist_sq_thr: float = DEFAULT_NONTRIV_POS_DIST_SQ_THR,
) -> PlaceDataset:
    """A dataset of in-memory uint8 BGR images (e.g. synthetic-world frames) with positions."""
    return PlaceDataset(
        name, split, list(db_images), np.asarray(db_utm)[:, :2], list(q_images), np.asarray(q_utm)[:, :2],
        pos_dist_thr, nontriv_pos_dist_sq_thr,
    )  # fmt: skip


def dataset_from_spec(spec: dict[str, Any] | PlaceDataset) -> PlaceDataset:
    """Build a dataset from a config mapping (``format`` + its arguments); a PlaceDataset passes through.

    Formats: ``pittsburgh`` (root, split), ``tokyo247`` (root[, query_dir]),
    ``mat`` (mat, db_root, query_root), ``folder`` (root, split), ``map`` (map, queries).
    Optional for all: ``pos_dist_thr`` overrides the file's threshold.
    """
    if isinstance(spec, PlaceDataset):
        return spec
    if not isinstance(spec, dict) or "format" not in spec:
        raise DatasetError(f"a dataset spec must be a mapping with a 'format' key, got {spec!r}")
    s = dict(spec)
    fmt = s.pop("format")
    thr = s.pop("pos_dist_thr", None)
    check = bool(s.pop("check_files", True))
    try:
        if fmt == "pittsburgh":
            ds = read_pittsburgh(s["root"], s.get("split", "pitts30k_train"), check)
        elif fmt == "tokyo247":
            ds = read_tokyo247(s["root"], s.get("query_dir", "247query_subset_v2"), check)
        elif fmt == "mat":
            ds = read_mat_dataset(s["mat"], s["db_root"], s["query_root"], s.get("name"), check)
        elif fmt == "folder":
            ds = read_folder_dataset(s["root"], s.get("split", "test"))
        elif fmt == "map":
            ds = read_map_dataset(s["map"], s["queries"])
        else:
            raise DatasetError(
                f"unknown dataset format {fmt!r}; use pittsburgh, tokyo247, mat, folder or map"
            )
    except KeyError as exc:
        raise DatasetError(f"dataset spec of format {fmt!r} lacks the key {exc.args[0]!r}") from exc
    if thr is not None:
        ds.pos_dist_thr = float(thr)
        ds.validate()
    return ds
