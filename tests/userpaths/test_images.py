"""Pillow in a compute function: it imports its image formats on the first open and asks
for the working directory when it saves, which a sandbox allows only because its zygote
imported them ahead and its directory is /. On every engine, through a real server and on
a real Ray cluster."""

from __future__ import annotations

import io

import pytest

import dandelion as dd

Image = pytest.importorskip("PIL.Image", reason="needs Pillow (pip install -e '.[bench]')")

from tests.userpaths.programs import images  # noqa: E402


def _png(width: int, height: int, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_an_image_is_opened_in_every_format(engine, fmt):
    assert dd.run(images.size_of, _png(32, 16, fmt), engine=engine, cache=False) == [32, 16]


def test_a_thumbnail_is_made_and_saved(engine):
    thumb = dd.run(images.thumbnail, _png(32, 16), engine=engine, cache=False)
    assert Image.open(io.BytesIO(thumb)).size == (8, 4)
    assert dd.run(images.thumbnail_size, _png(32, 16), engine=engine, cache=False) == [8, 4]


def test_through_a_client_of_a_real_server(client):
    client.register(images.thumbnail_size)
    assert client.invoke(images.thumbnail_size, _png(64, 64)) == [8, 8]


@pytest.mark.ray
@pytest.mark.slow
def test_ray(ray_cluster):
    with dd.Runtime(backend="ray", cache=False) as rt:
        assert rt.run(images.thumbnail_size, _png(16, 32)) == [4, 8]
