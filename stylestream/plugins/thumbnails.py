"""Style thumbnails. A plugin names a picture file and the server sends it to browsers, so it must be
an ordinary, modest image inside the plugin folder, checked where it is found (discovery) and again
where it is served (`load_thumbnail_bytes`): a file may change between the two."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image

from stylestream.plugins.paths import confined

MAX_THUMBNAIL_PIXELS = 40_000_000  # 40 MP: far above any thumbnail, far below a decompression bomb
MAX_THUMBNAIL_BYTES = 16 * 2**20
THUMBNAIL_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # what every browser shows


def _image_type(data: bytes, name: str) -> str:
    """The MIME type of `data` if it decodes as a thumbnail, else ValueError saying why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below is stricter
            with Image.open(io.BytesIO(data), formats=THUMBNAIL_FORMATS) as im:
                fmt, pixels = im.format, im.width * im.height
                if pixels <= MAX_THUMBNAIL_PIXELS:
                    im.verify()  # walks the file's chunks and checksums
    except Exception:  # noqa: BLE001 -- PIL raises many kinds for a file that is not an image
        raise ValueError(f"thumbnail {name!r} is not a PNG, JPEG, WebP or GIF image") from None
    if pixels > MAX_THUMBNAIL_PIXELS:
        raise ValueError(f"thumbnail {name!r} has {pixels / 1e6:.0f} MP, over the "
                         f"{MAX_THUMBNAIL_PIXELS / 1e6:.0f} MP limit")  # fmt: skip
    return Image.MIME[fmt]


def load_thumbnail_bytes(path: str | os.PathLike,
                         folder: str | os.PathLike | None = None) -> tuple[bytes, str]:  # fmt: skip
    """(bytes, content type) of a style's thumbnail, for serving. Re-checks everything discovery did:
    inside `folder` after symlinks (pass the plugin's `root`; None for a plugin from trusted code), at
    most MAX_THUMBNAIL_BYTES, and a PNG/JPEG/WebP/GIF that decodes within MAX_THUMBNAIL_PIXELS. The
    bytes returned are the bytes checked. Raises ValueError (one line: what is wrong) otherwise."""
    path = Path(path)
    if folder is not None:
        path = confined(folder, path.absolute(), "thumbnail")
    if not path.is_file():  # also refuses a FIFO or device, which would block or never end
        raise ValueError(f"thumbnail {path.name!r} is not a file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_THUMBNAIL_BYTES + 1)  # bounded: never a whole big file
    except OSError as exc:
        raise ValueError(f"thumbnail {path.name!r} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise ValueError(f"thumbnail {path.name!r} is over {MAX_THUMBNAIL_BYTES // 2**20} MB")
    return data, _image_type(data, path.name)
