"""ROS 2 glue for netvlad_ros: the only package that imports rclpy or ROS messages.

Modules:

- :mod:`netvlad_ros.ros.conversions`: Image / CompressedImage <-> numpy BGR, stamps.
- :mod:`netvlad_ros.ros.tables`: numpy structured arrays <-> sensor_msgs/PointCloud2
  "typed tables" (hypotheses, loop closures, map keyframes).
- :mod:`netvlad_ros.ros.qos`: QoS profiles from parameter strings.

No algorithm lives here (see docs/ARCHITECTURE): these modules only convert and
configure, so the layers below stay usable without ROS.
"""
