"""Start the netvlad_localizer node: ``ros2 launch netvlad_ros localize.launch.py map:=/path/to/map``.

Launch arguments: map, model, params_file, image_topic, compressed, namespace, device,
runtime, mode. Every node parameter and its default is in config/localize.yaml (the
default ``params_file``).

Which value wins: a launch argument is passed to the node only when it is given on the
command line (its default is empty), and then it overrides ``params_file``; an argument
left out leaves the params file's value (or the node's default) in place. So a params
file with ``mode: slam`` starts in slam mode unless ``mode:=...`` is given too.

Values are passed with their parameter's type (``map:=1234`` is the directory "1234",
``device:=0`` the device "0", refused with a clear message), never re-read as YAML.

Topics: the node reads ``image`` and ``image/compressed`` (which one: the ``compressed``
parameter); both are remapped, to ``image_topic`` and ``image_topic``/compressed, so a
params file's ``compressed: true`` works without a launch argument. ``image_topic``
defaults to the relative name ``camera/image_raw``, resolved in the node's namespace
(``namespace:=robot1`` reads ``/robot1/camera/image_raw``); give an absolute name
(``image_topic:=/camera/image_raw``) to read a topic outside the namespace.

Without ``ros2 launch`` the same start is:
  ros2 run netvlad_ros localize_node --ros-args -p map_path:=/path/to/map -r image:=/camera/image_raw
(``localize_node`` loads the packaged config/localize.yaml itself when given no params file.)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

#: Launch argument -> (node parameter, its type). Passed only when given.
OVERRIDES = {
    "map": ("map_path", str),
    "model": ("model_path", str),
    "device": ("device", str),
    "runtime": ("runtime", str),
    "mode": ("mode", str),
    "compressed": ("compressed", bool),
}


def _node(context, *args, **kwargs):
    """The node action, with the launch arguments the user gave as typed parameter overrides."""
    overrides = {}
    for arg, (name, value_type) in OVERRIDES.items():
        if LaunchConfiguration(arg).perform(context) != "":
            overrides[name] = ParameterValue(LaunchConfiguration(arg), value_type=value_type)
    image_topic = LaunchConfiguration("image_topic")
    return [
        Node(
            package="netvlad_ros",
            executable="localize_node",
            name="netvlad_localizer",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"])],
            output="screen",
            # No tty emulation: piped logs stay free of colour escapes; unbuffered output
            # keeps log lines in order with launch's own.
            emulate_tty=False,
            additional_env={"PYTHONUNBUFFERED": "1"},
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("netvlad_ros"), "config", "localize.yaml")
    args = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="parameter file"),
        DeclareLaunchArgument(
            "map", default_value="", description="map directory (map_path); default: params_file's"
        ),
        DeclareLaunchArgument(
            "model",
            default_value="",
            description="model file (model_path); default: params_file's (built-in model)",
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="camera/image_raw",
            description="camera topic (relative names resolve in the namespace); <image_topic>/compressed when compressed",
        ),
        DeclareLaunchArgument(
            "compressed",
            default_value="",
            description="true: subscribe to <image_topic>/compressed; default: params_file's",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument(
            "device", default_value="", description="auto, cpu, cuda or cuda:N; default: params_file's (auto)"
        ),
        DeclareLaunchArgument(
            "runtime",
            default_value="",
            description="auto, torch, onnxruntime, openvino or tensorrt; default: params_file's (auto)",
        ),
        DeclareLaunchArgument(
            "mode",
            default_value="",
            description="localization or slam; default: params_file's (localization)",
        ),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_node)])
