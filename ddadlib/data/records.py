"""Small data classes that describe the images of a source before they are decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Box:
    """A bounding box in pixel coordinates of the image it belongs to (x, y: top-left corner)."""

    x: float
    y: float
    w: float
    h: float
    label: str = ""

    def scaled(self, sx: float, sy: float) -> Box:
        """The same box in an image resized by factors ``sx`` (width) and ``sy`` (height)."""
        return Box(self.x * sx, self.y * sy, self.w * sx, self.h * sy, self.label)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source: where it lives and what is known of it before decoding.

    ``id`` is the image's name in the prepared dataset's manifest and split: for files, the path
    relative to the source root, with forward slashes.
    """

    id: str
    path: Path
    label: int
    patient_id: str | None = None
    finding: str = ""
    boxes: tuple[Box, ...] = field(default=())
