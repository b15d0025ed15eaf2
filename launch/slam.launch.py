"""Start SLAM: ``ros2 launch netvlad_ros slam.launch.py [map:=/path/to/map] [rviz:=true]``.

Two nodes in one namespace: ``netvlad_localizer`` (``localize_node``, mode slam: grows the
map, detects loop closures) and ``netvlad_pose_graph`` (``pose_graph_node``: GTSAM pose
graph over the localizer's keyframes and loop closures and the odometry), optionally RViz.

Launch arguments: params_file (localize node, config/localize.yaml), pose_graph_params_file
(config/pose_graph.yaml), map, model, image_topic, compressed, odom_topic, namespace, device,
runtime, rviz, rviz_config.

Which value wins (as launch/localize.launch.py): a launch argument is passed to a node only
when it is given (its default is empty), with its parameter's type (``map:=1234`` is the
directory "1234"); otherwise the params file's value stands. ``mode`` is always ``slam``.

Topics: ``image_topic`` (default ``camera/image_raw``) and ``odom_topic`` (default ``odom``)
are relative, so ``namespace:=robot1`` reads ``/robot1/camera/image_raw`` and
``/robot1/odom``; both nodes read ``odom_topic``. The pose graph finds the localizer's
tables (``netvlad_localizer/map_keyframes``, ``netvlad_localizer/loop_closures``) in the
same namespace without remapping.

RViz: ``rviz:=true`` starts ``rviz2 -d <rviz_config>`` (default config/netvlad.rviz) when the
``rviz2`` package is installed; when it is not (it is not on PyPI), launch logs that and
starts the two nodes alone. The config names the topics of a launch without namespace.

Without ``ros2 launch`` the same start is:
  ros2 run netvlad_ros localize_node --ros-args -p mode:=slam -r image:=/camera/image_raw
  ros2 run netvlad_ros pose_graph_node --ros-args --params-file config/pose_graph.yaml
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

#: Launch argument -> (localize node parameter, its type). Passed only when given.
OVERRIDES = {
    "map": ("map_path", str),
    "model": ("model_path", str),
    "device": ("device", str),
    "runtime": ("runtime", str),
    "compressed": ("compressed", bool),
}

_COMMON = {
    "output": "screen",
    # No tty emulation: piped logs stay free of colour escapes; unbuffered output keeps
    # log lines in order with launch's own.
    "emulate_tty": False,
    "additional_env": {"PYTHONUNBUFFERED": "1"},
}


def _rviz_installed() -> bool:
    try:
        get_package_share_directory("rviz2")
    except PackageNotFoundError:
        return False
    return True


def _nodes(context, *args, **kwargs):
    """The node actions, with the launch arguments the user gave as typed parameter overrides."""
    overrides = {"mode": ParameterValue("slam", value_type=str)}
    for arg, (name, value_type) in OVERRIDES.items():
        if LaunchConfiguration(arg).perform(context) != "":
            overrides[name] = ParameterValue(LaunchConfiguration(arg), value_type=value_type)
    image_topic = LaunchConfiguration("image_topic")
    odom_topic = LaunchConfiguration("odom_topic")
    namespace = LaunchConfiguration("namespace")
    actions = [
        Node(
            package="netvlad_ros",
            executable="localize_node",
            name="netvlad_localizer",
            namespace=namespace,
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[
                ("image", image_topic),
                ("image/compressed", [image_topic, "/compressed"]),
                ("odom", odom_topic),
            ],
            **_COMMON,
        ),
        Node(
            package="netvlad_ros",
            executable="pose_graph_node",
            name="netvlad_pose_graph",
            namespace=namespace,
            parameters=[LaunchConfiguration("pose_graph_params_file")],
            remappings=[("odom", odom_topic)],
            **_COMMON,
        ),
    ]
    if LaunchConfiguration("rviz").perform(context).strip().lower() in ("true", "1", "yes", "on"):
        if _rviz_installed():
            actions.append(
                Node(
                    package="rviz2",
                    executable="rviz2",
                    name="rviz2",
                    arguments=["-d", LaunchConfiguration("rviz_config")],
                    output="screen",
                )
            )
        else:
            actions.append(
                LogInfo(msg="rviz:=true, but rviz2 is not installed: starting the nodes without it")
            )
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("netvlad_ros")
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "localize.yaml"),
            description="localize node parameter file",
        ),
        DeclareLaunchArgument(
            "pose_graph_params_file",
            default_value=os.path.join(share, "config", "pose_graph.yaml"),
            description="pose graph node parameter file",
        ),
        DeclareLaunchArgument(
            "map",
            default_value="",
            description="map directory (map_path; created if missing); default: params_file's",
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
        DeclareLaunchArgument(
            "odom_topic",
            default_value="odom",
            description="nav_msgs/Odometry topic both nodes read (relative names resolve in the namespace)",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
        DeclareLaunchArgument(
            "device", default_value="", description="auto, cpu, cuda or cuda:N; default: params_file's (auto)"
        ),
        DeclareLaunchArgument(
            "runtime",
            default_value="",
            description="auto, torch, onnxruntime, openvino or tensorrt; default: params_file's (auto)",
        ),
        DeclareLaunchArgument(
            "rviz", default_value="false", description="true: start rviz2 (when installed) with rviz_config"
        ),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=os.path.join(share, "config", "netvlad.rviz"),
            description="RViz configuration",
        ),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_nodes)])
