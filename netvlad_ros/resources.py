"""Files the package ships beside its code: ``config/`` and ``models/`` of the repository.

They are found in this order, so a source checkout, a colcon install and a pip install
all work without configuration:

1. the source tree (``<repo>/config``, ``<repo>/models``), when this module runs from
   a checkout (the repository root holds ``package.xml``);
2. the ament share directory ``share/netvlad_ros`` of a colcon or apt install
   (``ament_index_python``, which comes with rclpy; skipped when it is absent);
3. ``<sys.prefix>/share/netvlad_ros``, where ``pip install`` puts setup.py's data_files.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PACKAGE", "shared_file"]

PACKAGE = "netvlad_ros"


def _roots() -> Iterator[Path]:
    src = Path(__file__).resolve().parents[1]
    if (src / "package.xml").is_file():
        yield src
    share = None
    # ImportError: no ament_index_python; LookupError: not installed; OSError: no AMENT_PREFIX_PATH.
    with contextlib.suppress(ImportError, LookupError, ValueError, OSError):
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(PACKAGE))
    if share is not None:
        yield share
    yield Path(sys.prefix) / "share" / PACKAGE


def shared_file(*parts: str) -> Path | None:
    """The first existing ``<root>/<parts...>`` of the roots above, or None."""
    for root in _roots():
        path = root.joinpath(*parts)
        if path.is_file():
            return path
    return None
