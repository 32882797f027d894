"""Images with Pillow, as people write them: PIL imported at module level, an image's
bytes in, a thumbnail's bytes out."""

import io

from PIL import Image

import dandelion as dd

SIZE = (8, 8)


@dd.compute
def size_of(data: bytes) -> list[int]:
    return list(Image.open(io.BytesIO(data)).size)


@dd.compute
def thumbnail(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.thumbnail(SIZE)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dd.composition
def thumbnail_size(data: bytes) -> list[int]:
    return size_of(thumbnail(data))
