"""Upgrade a map directory to the current schema (``netvlad-ros migrate-map PATH``).

Schema 1 -> 2 keeps every keyframe, pose, GPS fix, thumbnail, descriptor, the faiss
index and the origin, and adds the (empty) local-feature files: the migrated keyframes
have no local features, so geometric verification against them is unavailable until
the map is rebuilt with ``netvlad-ros build-map``. The rewrite uses the atomic save
protocol, so an interrupted migration leaves the previous map in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import storage


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did. ``migrated`` is False when the map was already current."""

    source: Path
    output: Path
    from_schema: int
    to_schema: int
    keyframes: int
    keyframes_with_features: int

    @property
    def migrated(self) -> bool:
        """True when a file was written in a new schema (or to a new output)."""
        return self.from_schema != self.to_schema or self.source != self.output

    def __str__(self) -> str:
        if self.from_schema == self.to_schema and self.source == self.output:
            return f"{self.source}: already schema {self.to_schema}, nothing to do"
        lines = [
            f"migrated {self.source} (schema {self.from_schema}) -> {self.output} (schema {self.to_schema}): "
            f"{self.keyframes} keyframes; descriptors, poses, GPS fixes and thumbnails kept"
        ]
        missing = self.keyframes - self.keyframes_with_features
        if missing:
            lines.append(
                f"{missing} of {self.keyframes} keyframes have no local features: localization and loop "
                "closures against them cannot be geometrically verified until the map is rebuilt with "
                "`netvlad-ros build-map`"
            )
        return "\n".join(lines)


def migrate(path: str | Path, output: str | Path | None = None) -> MigrationReport:
    """Upgrade the map at ``path`` to the current schema, in place or into ``output``.

    Raises the loader's errors (MapNotFoundError, MapCorruptError naming the file,
    MapSchemaError for a schema this code cannot migrate).
    """
    src = Path(path).absolute()
    dst = src if output is None else Path(output).absolute()
    found, snap = storage.upgrade(src, dst)
    return MigrationReport(src, dst, found, storage.SCHEMA_VERSION, len(snap), len(snap.features))
