"""Recognition engine (no ROS): localization against a map and loop-closure detection.

- ``Localizer`` / ``LocalizerParams``: top-K retrieval, spatial voting into places,
  re-ranking by geometric verification, acceptance of verified places with thresholds from
  the map's calibration, optional temporal filtering and SeqSLAM-style sequence matching.
- ``calibrate`` / ``Calibration``: thresholds and the probability of "same place" from the
  map's own poses (weak supervision), stored in the map's manifest.
- ``LoopClosureDetector`` / ``LoopClosureParams``: exclusion window, islands,
  temporal consistency, geometric verification with the map's features, agreement with
  odometry, the body-frame relative pose and covariance, a reason for every reject.
- ``FeatureExtractor`` / ``FeatureParams``: ORB/SIFT keypoints (+ depth) per keyframe.
- ``GeometricVerifier`` / ``GeometryParams`` / ``Verification``: ratio + mutual matching,
  RANSAC PnP (depth), essential (intrinsics) or fundamental matrix; inliers, ratio, spread.
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
from netvlad_ros.recognition.features import FeatureExtractor, FeatureParams
from netvlad_ros.recognition.geometry import GeometricVerifier, GeometryParams, Verification
from netvlad_ros.recognition.localizer import (
    CandidateCheck,
    LocalizationReason,
    LocalizationResult,
    Localizer,
    LocalizerParams,
    LocalizerThresholds,
)
from netvlad_ros.recognition.loop_closure import (
    LoopClosure,
    LoopClosureDetector,
    LoopClosureParams,
    LoopClosureResult,
    OdometryCheckParams,
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
    "FeatureExtractor",
    "FeatureParams",
    "FrameEvent",
    "FramePlan",
    "FrameResult",
    "FrameStatus",
    "GeometricVerifier",
    "GeometryParams",
    "Hypothesis",
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
    "OdometryCheckParams",
    "Place",
    "RecognitionParamError",
    "RecognitionSession",
    "RejectReason",
    "RejectedCandidate",
    "SaveResult",
    "SequenceMatcher",
    "SessionParams",
    "Verification",
    "calibrate",
    "calibration_problem",
    "cluster_hypotheses",
    "normalized_margin",
]
