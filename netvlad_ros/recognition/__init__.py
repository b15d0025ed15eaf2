"""Recognition engine (no ROS): localization against a map and loop-closure detection.

- ``Localizer`` / ``LocalizerParams``: top-K retrieval, spatial voting into places,
  re-ranking by geometric verification, acceptance of verified places with thresholds from
  the map's calibration, optional temporal filtering and SeqSLAM-style sequence matching.
- ``calibrate`` / ``Calibration``: thresholds and the probability of "same place" from the
  map's own poses (weak supervision), stored in the map's manifest.
- ``LoopClosureDetector`` / ``LoopClosureParams``: exclusion window, islands,
  temporal consistency, optional geometric verification, a reason for every reject.
- ``GeometricVerifier`` / ``GeometryParams``: ORB/SIFT + ratio test + RANSAC
  (essential matrix with intrinsics, fundamental matrix otherwise).
- ``RecognitionSession`` / ``SessionParams``: the per-frame rules of the node (modes,
  keyframe gating, time going backwards, stale frames), shared by the node, eval-map
  and the demo.

Parameters, defaults and the measurements behind them: docs/recognition.md.
"""

from netvlad_ros.recognition.calibration import (
    Calibration,
    CalibrationError,
    CalibrationParams,
    calibrate,
    calibration_problem,
)
from netvlad_ros.recognition.geometry import GeometricResult, GeometricVerifier, GeometryParams, ImageFeatures
from netvlad_ros.recognition.localizer import (
    CandidateCheck,
    LocalizationReason,
    LocalizationResult,
    Localizer,
    LocalizerParams,
    LocalizerThresholds,
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
    "Calibration",
    "CalibrationError",
    "CalibrationParams",
    "CandidateCheck",
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
    "LocalizerThresholds",
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
    "calibrate",
    "calibration_problem",
    "cluster_hypotheses",
    "normalized_margin",
]
