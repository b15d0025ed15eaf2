"""netvlad_ros: NetVLAD visual place recognition for ROS 2.

Layers (see docs/ARCHITECTURE in the README): ``model`` (descriptor network),
``mapdb`` (map database), ``recognition`` (localization and loop closure),
``offline`` (bags, maps, training) and ``ros`` (the only rclpy code).
"""

__version__ = "0.1.0"
