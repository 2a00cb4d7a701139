"""Images for multimodal prompts: whatever a dataset or a user holds, as a URL a backend takes.

Local files, bytes and PIL images become base64 data URLs (checked to be images, so a bad
one fails only its row); http(s) and data URLs pass through for the server or engine to fetch.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from genrun.errors import RowError


@dataclass(frozen=True)
class ImagePolicy:
    """Which images a prompt may name. The CLI and the Python API take any: they run as the
    user, on the user's files. genrun-serve over HTTP answers whoever reaches its port, so it
    takes data URLs, local files only under the operator's folder (`root`, checked after `..`
    and symlinks are resolved, and sent as their pixels alone), and http(s) URLs only when the
    operator allows them (they would be fetched by the server or its engine)."""

    restricted: bool = False
    root: Path | None = None  # with restricted: the one folder local files may come from
    urls: bool = True  # http(s) URLs pass to the backend, which fetches them

    def local_file(self, image: str, base_dir: str | None) -> Path:
        """The file a local image names, if this policy allows it."""
        if not self.restricted:
            path = Path(image).expanduser()
            if not path.is_absolute() and base_dir:
                path = Path(base_dir) / path  # relative to the dataset file's folder
            return path
        if self.root is None:
            raise RowError("local image files are not accepted here (the server's operator can allow a folder "
                           "with --image-root DIR); send the image as a data URL")
        root = self.root.resolve()
        path = (root / image).resolve()  # an absolute path stays itself; `..` and symlinks are followed
        if not path.is_relative_to(root):
            raise RowError(f"image {image!r} is outside the folder this server reads images from")
        return path


def image_list(images: Any) -> list[Any]:
    """A row's images as a list: None is none; a bare string (or one image) is one image."""
    if images is None:
        return []
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        return [images]
    return list(images)


def image_url(image: Any, base_dir: str | None = None, policy: ImagePolicy = ImagePolicy()) -> str:
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            if not policy.urls:
                raise RowError("image URLs are not fetched here (the server's operator can allow them with "
                               "--allow-image-urls); send the image as a data URL")
            return image
        if image.startswith("data:"):
            if not image.startswith("data:image/"):
                raise RowError(f"data URL is not an image ({image[:30]}...)")
            return image
        path = policy.local_file(image, base_dir)
        if not path.is_file():
            raise RowError(f"image file not found: {image}")
        if policy.restricted:  # the pixels only: not whatever else the file holds after the image
            return pixels_url(path.read_bytes(), str(image))
        return data_url(path.read_bytes(), str(image))
    if isinstance(image, (bytes, bytearray)):
        return data_url(bytes(image), "image bytes")
    if isinstance(image, Mapping):  # a datasets Image feature that was not decoded
        if image.get("bytes"):
            return data_url(image["bytes"], str(image.get("path") or "image bytes"))
        if image.get("path"):
            return image_url(image["path"], base_dir, policy)
    if hasattr(image, "save") and hasattr(image, "size"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return data_url(buffer.getvalue(), "image", checked=True)
    raise RowError(f"cannot use {type(image).__name__} as an image (give a path, URL, bytes or PIL image)")


def data_url(data: bytes, name: str, checked: bool = False) -> str:
    fmt = "png" if checked else image_format(data, name)
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"


def pixels_url(data: bytes, name: str) -> str:
    """An image file decoded and written anew as PNG: its pixels, nothing else the file holds."""
    from PIL import Image, UnidentifiedImageError

    image_format(data, name)
    try:
        with Image.open(io.BytesIO(data)) as img:
            buffer = io.BytesIO()
            img.save(buffer, format="PNG")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RowError(f"not an image: {name}") from None
    return data_url(buffer.getvalue(), name, checked=True)


def image_format(data: bytes, name: str) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
            return (img.format or "png").lower()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RowError(f"not an image: {name}") from None


def describe(image: Any) -> Any:
    """What a record keeps of an image: its path or URL, never the pixels."""
    if isinstance(image, str):
        return image if not image.startswith("data:") else image[:40] + "..."
    if isinstance(image, Mapping) and image.get("path"):
        return image["path"]
    if hasattr(image, "size"):
        return f"<image {image.size[0]}x{image.size[1]}>"
    return f"<{type(image).__name__}>"
