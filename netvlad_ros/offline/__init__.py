"""Offline tools: bag reading/writing, map building, training, evaluation and a
deterministic synthetic world for demos and tests. No ROS imports here."""
