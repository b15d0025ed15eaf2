"""Local features stored per keyframe: the data types shared by the map and recognition.

The recognition layer extracts features (ORB by default, SIFT on request) from the
full-resolution image and verifies matches with them; the map database only stores
them, checks them, and writes them to disk (docs/mapdb.md, "Local features").

* :class:`CameraIntrinsics`: pinhole intrinsics plus a ROS ``camera_info`` distortion
  model, so that verification and PnP can undistort keypoints.
* :class:`KeyframeFeatures`: keypoints (N, 2) float32 pixels, binary/quantised
  descriptors (N, W) uint8, optional per-keypoint depth (N,) float32 metres.

SIFT descriptors are stored as uint8, as COLMAP does: OpenCV's float SIFT values are
already integers in [0, 255] (OpenCV scales the normalised descriptor by 512 and
saturates, the same rule as COLMAP's ``FeatureDescriptorsToUnsignedByte``), so
:func:`sift_descriptors_to_uint8` (round, clip) loses nothing for them. L2-normalised
float descriptors from elsewhere must be multiplied by 512 first.

Both classes are frozen. Their arrays are numpy arrays and numpy cannot freeze a
caller's array, so :meth:`KeyframeFeatures.create` (and the map database, which stores
only such copies) makes read-only, C-contiguous copies: a stored feature set is never
changed in place, which is what lets a map snapshot share them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Descriptor width in bytes per feature kind.
DESCRIPTOR_WIDTH: dict[str, int] = {"orb": 32, "sift": 128}
#: Feature kinds, in the order of their on-disk codes (0 = orb, 1 = sift).
FEATURE_KINDS: tuple[str, ...] = ("orb", "sift")
#: Distortion models (ROS ``sensor_msgs/CameraInfo`` names) and their coefficient counts.
DISTORTION_COEFFICIENTS: dict[str, int] = {
    "none": 0,
    "plumb_bob": 5,
    "rational_polynomial": 8,
    "equidistant": 4,
}


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the image the features were extracted from.

    fx, fy, cx, cy: pixels; width, height: image size in pixels; ``distortion_model``:
    "none", "plumb_bob" (k1 k2 p1 p2 k3), "rational_polynomial" (k1 k2 p1 p2 k3 k4 k5 k6)
    or "equidistant" (fisheye k1 k2 k3 k4), with ``distortion`` its coefficients in the
    ROS/OpenCV order.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = "none"
    distortion: tuple[float, ...] = ()

    def validate(self) -> None:
        """Raise ValueError naming the bad field."""
        for name in ("fx", "fy", "cx", "cy"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise ValueError(f"CameraIntrinsics.{name} must be a number, got {v!r}")
            if not math.isfinite(float(v)):
                raise ValueError(f"CameraIntrinsics.{name} must be finite, got {v!r}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"CameraIntrinsics focal lengths must be > 0, got fx={self.fx!r} fy={self.fy!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"CameraIntrinsics.{name} must be an int >= 1, got {v!r}")
        if self.distortion_model not in DISTORTION_COEFFICIENTS:
            raise ValueError(
                f"CameraIntrinsics.distortion_model must be one of {sorted(DISTORTION_COEFFICIENTS)}, "
                f"got {self.distortion_model!r}"
            )
        if not isinstance(self.distortion, tuple):
            raise ValueError(
                f"CameraIntrinsics.distortion must be a tuple, got {type(self.distortion).__name__}"
            )
        need = DISTORTION_COEFFICIENTS[self.distortion_model]
        if len(self.distortion) != need:
            raise ValueError(
                f"CameraIntrinsics.distortion: {self.distortion_model!r} takes {need} coefficients, "
                f"got {len(self.distortion)}"
            )
        for v in self.distortion:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise ValueError(f"CameraIntrinsics.distortion must hold numbers, got {v!r}")
            if not math.isfinite(float(v)):
                raise ValueError(f"CameraIntrinsics.distortion must be finite, got {self.distortion!r}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored in the map manifest)."""
        return {
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "width": int(self.width),
            "height": int(self.height),
            "distortion_model": self.distortion_model,
            "distortion": [float(v) for v in self.distortion],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraIntrinsics:
        """Inverse of :meth:`to_dict`; validates (ValueError/TypeError on bad input)."""
        cam = cls(
            fx=d["fx"],
            fy=d["fy"],
            cx=d["cx"],
            cy=d["cy"],
            width=d["width"],
            height=d["height"],
            distortion_model=d["distortion_model"],
            distortion=tuple(d["distortion"]),
        )
        cam.validate()
        return cam


def sift_descriptors_to_uint8(descriptors: np.ndarray) -> np.ndarray:
    """OpenCV float SIFT descriptors (values in [0, 255]) -> uint8 by rounding and clipping.

    Lossless for OpenCV's output, whose values are already integers; this is COLMAP's
    storage rule. Multiply L2-normalised descriptors by 512 before calling this.
    """
    d = np.asarray(descriptors)
    if d.dtype == np.uint8:
        return d
    if d.dtype.kind != "f":
        raise ValueError(f"SIFT descriptors must be float or uint8, got dtype {d.dtype}")
    if not np.all(np.isfinite(d)):
        raise ValueError("SIFT descriptors contain NaN or inf")
    out: np.ndarray = np.clip(np.rint(d), 0, 255).astype(np.uint8)
    return out


def _frozen(a: np.ndarray, dtype: type) -> np.ndarray:
    out: np.ndarray = np.array(a, dtype=dtype, order="C", copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class KeyframeFeatures:
    """Local features of one keyframe image.

    kind: "orb" or "sift"; keypoints: (N, 2) float32 pixel coordinates (x, y) in the
    full-resolution image of size ``image_size`` = (width, height), pixel centres at
    integers (OpenCV); descriptors: (N, 32) uint8 for ORB, (N, 128) uint8 for SIFT;
    depths: (N,) float32 metres along the optical axis, NaN where unknown, or None
    without a depth image; camera: the intrinsics of that image, or None when unknown.
    Build with :meth:`create` (converts and freezes); call :meth:`validate` on data from
    outside.
    """

    kind: str
    keypoints: np.ndarray
    descriptors: np.ndarray
    depths: np.ndarray | None
    image_size: tuple[int, int]
    camera: CameraIntrinsics | None = None

    @classmethod
    def create(
        cls,
        kind: str,
        keypoints: np.ndarray,
        descriptors: np.ndarray,
        image_size: tuple[int, int] | Sequence[int],
        depths: np.ndarray | None = None,
        camera: CameraIntrinsics | None = None,
    ) -> KeyframeFeatures:
        """Validated features with read-only C-contiguous copies of the arrays.

        ``keypoints`` may be any float array (N, 2); SIFT ``descriptors`` may be OpenCV's
        float32 (rounded to uint8, see :func:`sift_descriptors_to_uint8`); ``depths``
        any float (N,). Raises ValueError naming the bad field.
        """
        kp = np.asarray(keypoints)
        if kp.dtype.kind not in "fiu":
            raise ValueError(f"KeyframeFeatures.keypoints must be numeric, got dtype {kp.dtype}")
        if kp.size == 0:
            kp = kp.reshape(0, 2)
        desc = np.asarray(descriptors)
        if kind == "sift" and desc.dtype.kind == "f":
            desc = sift_descriptors_to_uint8(desc)
        if desc.size == 0 and kind in DESCRIPTOR_WIDTH:
            desc = desc.reshape(0, DESCRIPTOR_WIDTH[kind]).astype(np.uint8)
        if desc.dtype != np.uint8:
            raise ValueError(f"KeyframeFeatures.descriptors must be uint8, got dtype {desc.dtype}")
        dep = None
        if depths is not None:
            dep = np.asarray(depths)
            if dep.dtype.kind != "f":
                raise ValueError(f"KeyframeFeatures.depths must be floating point, got dtype {dep.dtype}")
            dep = _frozen(dep, np.float32)
        try:
            size = (int(image_size[0]), int(image_size[1]))
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"KeyframeFeatures.image_size must be (width, height), got {image_size!r}"
            ) from None
        if len(image_size) != 2:
            raise ValueError(f"KeyframeFeatures.image_size must be (width, height), got {image_size!r}")
        out = cls(kind, _frozen(kp, np.float32), _frozen(desc, np.uint8), dep, size, camera)
        out.validate()
        return out

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of keypoints + descriptors + depths (what the map stores per keyframe)."""
        n = int(self.keypoints.nbytes + self.descriptors.nbytes)
        return n + (int(self.depths.nbytes) if self.depths is not None else 0)

    def validate(self) -> None:
        """Raise ValueError naming the bad field (shapes, dtypes, values)."""
        if self.kind not in DESCRIPTOR_WIDTH:
            raise ValueError(f"KeyframeFeatures.kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        size = self.image_size
        if (
            not isinstance(size, tuple)
            or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size)
        ):
            raise ValueError(f"KeyframeFeatures.image_size must be (width, height) ints >= 1, got {size!r}")
        kp = self.keypoints
        if not isinstance(kp, np.ndarray) or kp.dtype != np.float32 or kp.ndim != 2 or kp.shape[1] != 2:
            raise ValueError(f"KeyframeFeatures.keypoints must be float32 (N, 2), got {_describe(kp)}")
        n = kp.shape[0]
        width = DESCRIPTOR_WIDTH[self.kind]
        d = self.descriptors
        if not isinstance(d, np.ndarray) or d.dtype != np.uint8 or d.shape != (n, width):
            raise ValueError(
                f"KeyframeFeatures.descriptors must be uint8 ({n}, {width}) for {self.kind!r}, got {_describe(d)}"
            )
        if n:
            if not np.all(np.isfinite(kp)):
                raise ValueError("KeyframeFeatures.keypoints contain NaN or inf")
            w, h = size
            lo, hi = kp.min(axis=0), kp.max(axis=0)
            if lo[0] < -0.5 or lo[1] < -0.5 or hi[0] > w - 0.5 or hi[1] > h - 0.5:
                raise ValueError(
                    f"KeyframeFeatures.keypoints outside the {w}x{h} image (x in [{lo[0]:.1f}, {hi[0]:.1f}], "
                    f"y in [{lo[1]:.1f}, {hi[1]:.1f}]; allowed [-0.5, size - 0.5])"
                )
        if self.depths is not None:
            z = self.depths
            if not isinstance(z, np.ndarray) or z.dtype != np.float32 or z.shape != (n,):
                raise ValueError(
                    f"KeyframeFeatures.depths must be float32 ({n},) or None, got {_describe(z)}"
                )
            known = z[~np.isnan(z)]
            if known.size and (not np.all(np.isfinite(known)) or known.min() <= 0):
                raise ValueError("KeyframeFeatures.depths must be finite metres > 0 (NaN where unknown)")
        if self.camera is not None:
            if not isinstance(self.camera, CameraIntrinsics):
                raise ValueError(
                    f"KeyframeFeatures.camera must be CameraIntrinsics or None, got {type(self.camera).__name__}"
                )
            self.camera.validate()
            if (self.camera.width, self.camera.height) != tuple(size):
                raise ValueError(
                    f"KeyframeFeatures.camera is for a {self.camera.width}x{self.camera.height} image, "
                    f"the features for {size[0]}x{size[1]}"
                )

    def __eq__(self, other: object) -> bool:
        """Bit-exact equality of every field (NaN depths compare equal)."""
        if not isinstance(other, KeyframeFeatures):
            return NotImplemented
        if (self.depths is None) != (other.depths is None):
            return False
        return (
            self.kind == other.kind
            and self.image_size == other.image_size
            and self.camera == other.camera
            and self.keypoints.dtype == other.keypoints.dtype
            and np.array_equal(self.keypoints, other.keypoints)
            and self.descriptors.dtype == other.descriptors.dtype
            and np.array_equal(self.descriptors, other.descriptors)
            and (
                self.depths is None
                or other.depths is None
                or (
                    self.depths.dtype == other.depths.dtype
                    and np.array_equal(self.depths, other.depths, equal_nan=True)
                )
            )
        )

    __hash__ = None  # type: ignore[assignment]


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} {a.shape}"
    return type(a).__name__


def _immutable(a: np.ndarray) -> bool:
    """True when neither ``a`` nor any array it is a view of can be written through."""
    cur: object = a
    while isinstance(cur, np.ndarray):
        if cur.flags.writeable:
            return False
        cur = cur.base
    return cur is None or isinstance(cur, bytes)


def frozen_features(feats: KeyframeFeatures) -> KeyframeFeatures:
    """``feats`` validated, with read-only C-contiguous arrays (a copy unless already so)."""
    feats.validate()
    arrays = [feats.keypoints, feats.descriptors] + ([feats.depths] if feats.depths is not None else [])
    if all(_immutable(a) and a.flags.c_contiguous for a in arrays):
        return feats
    return KeyframeFeatures(
        feats.kind,
        _frozen(feats.keypoints, np.float32),
        _frozen(feats.descriptors, np.uint8),
        _frozen(feats.depths, np.float32) if feats.depths is not None else None,
        feats.image_size,
        feats.camera,
    )
