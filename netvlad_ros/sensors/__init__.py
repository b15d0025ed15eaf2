"""What the live node and the offline tools share about sensor data, without ROS:
image message decoding (:mod:`.image_codec`), timed poses, their interpolation and
keyframe selection (:mod:`.poses`), and the errors of bad sensor data (:mod:`.errors`).

May import only ``config``, ``mapdb.geodesy`` and third-party libraries; never
``offline/`` or ``ros/``, which both build on it.
"""

from .errors import PoseError, PoseOrderError, SensorError
from .image_codec import (
    DECODE_ERROR_REASONS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    compressed_msg_to_bgr,
    decode_image_msg,
    image_msg_to_bgr,
)
from .poses import (
    KeyframeParams,
    KeyframeSelector,
    PoseBuffer,
    PoseTrack,
    interpolate_poses,
    rotation_angle_deg,
    select_keyframes,
    unit_quaternions,
)

__all__ = [
    "DECODE_ERROR_REASONS",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "KeyframeParams",
    "KeyframeSelector",
    "PoseBuffer",
    "PoseError",
    "PoseOrderError",
    "PoseTrack",
    "SensorError",
    "compressed_msg_to_bgr",
    "decode_image_msg",
    "image_msg_to_bgr",
    "interpolate_poses",
    "rotation_angle_deg",
    "select_keyframes",
    "unit_quaternions",
]
