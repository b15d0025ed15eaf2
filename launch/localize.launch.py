"""Start the netvlad_localizer node: ``ros2 launch netvlad_ros localize.launch.py map:=/path/to/map``.

Launch arguments: map, model, params_file, image_topic, compressed, namespace, device, mode.
Every node parameter and its default is in config/localize.yaml; the arguments here
override the few that change from run to run. The node reads ``image`` (or
``image/compressed`` when compressed:=true), remapped to ``image_topic``.

Without ``ros2 launch`` the same start is:
  ros2 run netvlad_ros localize_node --ros-args --params-file <share>/config/localize.yaml \
      -p map_path:=/path/to/map -r image:=/camera/image_raw
(``localize_node`` loads the packaged config/localize.yaml itself when given no params file.)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("netvlad_ros"), "config", "localize.yaml")
    args = [
        DeclareLaunchArgument("map", default_value="", description="map directory (map_path)"),
        DeclareLaunchArgument("model", default_value="", description="model file; empty: built-in default"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="parameter file"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera topic"),
        DeclareLaunchArgument(
            "compressed", default_value="false", description="true: subscribe to <image_topic>/compressed"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("mode", default_value="localization", description="localization or slam"),
    ]
    overrides = {
        "map_path": LaunchConfiguration("map"),
        "model_path": LaunchConfiguration("model"),
        "device": LaunchConfiguration("device"),
        "mode": LaunchConfiguration("mode"),
        "compressed": ParameterValue(LaunchConfiguration("compressed"), value_type=bool),
    }
    image_topic = LaunchConfiguration("image_topic")

    def node(compressed: bool, condition) -> Node:
        remap = (
            [("image/compressed", [image_topic, "/compressed"])] if compressed else [("image", image_topic)]
        )
        return Node(
            package="netvlad_ros",
            executable="localize_node",
            name="netvlad_localizer",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=remap,
            output="screen",
            emulate_tty=True,
            condition=condition,
        )

    return LaunchDescription(
        [
            *args,
            node(False, UnlessCondition(LaunchConfiguration("compressed"))),
            node(True, IfCondition(LaunchConfiguration("compressed"))),
        ]
    )
