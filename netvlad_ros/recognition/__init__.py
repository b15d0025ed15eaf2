"""Recognition engine (no ROS): localization against a map and loop-closure detection.

- ``Localizer`` / ``LocalizerParams``: top-K retrieval, spatial voting into places,
  margin confidence, optional temporal filtering and SeqSLAM-style sequence matching.
- ``LoopClosureDetector`` / ``LoopClosureParams``: exclusion window, islands,
  temporal consistency, optional geometric verification, a reason for every reject.
- ``GeometricVerifier`` / ``GeometryParams``: ORB/SIFT + ratio test + RANSAC
  (essential matrix with intrinsics, fundamental matrix otherwise).
- ``RecognitionSession`` / ``SessionParams``: the per-frame rules of the node (modes,
  keyframe gating, time going backwards, stale frames), shared by the node, eval-map
  and the demo.

Parameters, defaults and the measurements behind them: docs/recognition.md.
"""

from netvlad_ros.recognition.geometry import GeometricResult, GeometricVerifier, GeometryParams, ImageFeatures
from netvlad_ros.recognition.localizer import (
    LocalizationReason,
    LocalizationResult,
    Localizer,
    LocalizerParams,
)
from netvlad_ros.recognition.loop_closure import (
    FeatureStore,
    LoopClosure,
    LoopClosureDetector,
    LoopClosureParams,
    LoopClosureResult,
    RejectedCandidate,
    RejectReason,
)
from netvlad_ros.recognition.places import (
    Hypothesis,
    KeyframeOrder,
    Place,
    RecognitionParamError,
    cluster_hypotheses,
    normalized_margin,
)
from netvlad_ros.recognition.sequence import SequenceMatcher
from netvlad_ros.recognition.session import (
    MODES,
    FrameEvent,
    FramePlan,
    FrameResult,
    FrameStatus,
    RecognitionSession,
    SaveResult,
    SessionParams,
)

__all__ = [
    "MODES",
    "FeatureStore",
    "FrameEvent",
    "FramePlan",
    "FrameResult",
    "FrameStatus",
    "GeometricResult",
    "GeometricVerifier",
    "GeometryParams",
    "Hypothesis",
    "ImageFeatures",
    "KeyframeOrder",
    "LocalizationReason",
    "LocalizationResult",
    "Localizer",
    "LocalizerParams",
    "LoopClosure",
    "LoopClosureDetector",
    "LoopClosureParams",
    "LoopClosureResult",
    "Place",
    "RecognitionParamError",
    "RecognitionSession",
    "RejectReason",
    "RejectedCandidate",
    "SaveResult",
    "SequenceMatcher",
    "SessionParams",
    "cluster_hypotheses",
    "normalized_margin",
]
