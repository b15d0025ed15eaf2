"""Helpers shared by the tests (importable as ``support``): paths and generated images.

Nothing here is mocked: images are real uint8 arrays drawn with OpenCV.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RTABMAP = SHARED_DATA / "rtabmap_samples"


def make_scene(seed: int, height: int = 240, width: int = 320) -> np.ndarray:
    """A deterministic cluttered BGR scene: textured background, shapes and text."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = rng.integers(40, 200, 3)
    noise = cv2.resize(rng.integers(0, 255, (height // 16, width // 16, 3)).astype(np.uint8), (width, height))
    img = cv2.addWeighted(img, 0.6, noise, 0.4, 0)
    for _ in range(int(rng.integers(12, 20))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if kind == 0:
            p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.rectangle(img, p1, p2, color, -1 if rng.random() < 0.5 else 3)
        elif kind == 1:
            cv2.circle(img, p1, int(rng.integers(5, 50)), color, -1)
        else:
            cv2.putText(img, str(rng.integers(0, 10**6)), p1, cv2.FONT_HERSHEY_SIMPLEX, 1.2, color, 2)
    return img


def rtabmap_or_skip() -> Path:
    """The RTAB-Map sample data, or skip: a user's clone does not have ../shared."""
    if not (RTABMAP / "gt_matrix_84x84.npy").is_file():
        pytest.skip(
            f"real-image data not found at {RTABMAP} (only present beside the project's own checkout)"
        )
    return RTABMAP


def colcon_build_workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Copy the repository into ``tmp_path/ws/src`` and ``colcon build`` it with the venv's colcon.

    Returns the workspace and the environment to run its ``install/`` with (the venv on
    PATH and VIRTUAL_ENV set). Skips when colcon is not installed; fails with colcon's
    output when the build fails.
    """
    venv_bin = Path(sys.executable).parent
    if shutil.which("colcon", path=str(venv_bin)) is None:
        pytest.skip("colcon is not installed in this venv")
    ws = tmp_path / "ws"
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "build", "install", "log", "*.egg-info", "__pycache__", ".*cache"
    )
    shutil.copytree(REPO, ws / "src" / "netvlad_ros", ignore=ignore)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv_bin.parent)}
    env.pop("PYTHONPATH", None)
    build = subprocess.run(
        [str(venv_bin / "colcon"), "build", "--event-handlers", "console_direct-"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return ws, env
