"""Offline tools: bag reading, pose sources, map building, evaluation and training.
No ROS imports here. Test-data generators (synthetic world, bag writer) live in
:mod:`netvlad_ros.synthetic`."""
