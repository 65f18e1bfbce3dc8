import pytest

from app.storage.images import ImageTooLargeError, UnsupportedImageError, inspect_image, sniff
from tests import images

MAX = 40_000_000


@pytest.mark.parametrize(
    ("data", "kind", "ext", "ctype"),
    [
        (images.png(640, 480), "png", "png", "image/png"),
        (images.gif(640, 480), "gif", "gif", "image/gif"),
        (images.jpeg(640, 480), "jpeg", "jpg", "image/jpeg"),
        (images.jpeg(640, 480, sof=0xC2), "jpeg", "jpg", "image/jpeg"),  # progressive
        (images.webp_lossy(640, 480), "webp", "webp", "image/webp"),
        (images.webp_lossless(640, 480), "webp", "webp", "image/webp"),
        (images.webp_extended(640, 480), "webp", "webp", "image/webp"),
    ],
)
def test_formats_and_dimensions_from_the_header(data: bytes, kind: str, ext: str, ctype: str) -> None:
    info = inspect_image(data, MAX)
    assert (info.kind, info.width, info.height) == (kind, 640, 480)
    assert info.extension == ext
    assert info.content_type == ctype


def test_jpeg_skips_standalone_markers_before_the_frame() -> None:
    data = images.jpeg(10, 20)
    data = data[:2] + b"\xff\x01" + data[2:]  # a TEM marker has no length field
    assert inspect_image(data, MAX).width == 10


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, I am a text file",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"BM" + b"\x00" * 60,  # BMP is not accepted
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF but not WebP
        b"%PDF-1.7\n",
    ],
)
def test_not_a_supported_image(data: bytes) -> None:
    assert sniff(data) is None
    with pytest.raises(UnsupportedImageError, match="Not a PNG"):
        inspect_image(data, MAX)


@pytest.mark.parametrize(
    "data",
    [
        images.png()[:20],  # truncated IHDR
        images.png()[:12] + b"IDAT" + images.png()[16:],  # first chunk is not IHDR
        b"GIF89a\x01",  # truncated screen descriptor
        b"\xff\xd8\xff",  # no segments
        b"\xff\xd8\xff\xd9",  # end of image before a frame
        b"\xff\xd8\xff\xda\x00\x02",  # scan before a frame
        b"\xff\xd8\xff\xe0\x00\x04\x00\x00\x00\x00",  # garbage where the next marker should be
        b"\xff\xd8\xff\xe0\x00\x01",  # segment length below 2
        images.webp_lossy()[:23] + b"\x00\x00\x00" + images.webp_lossy()[26:],  # bad start code
        images.webp_lossless()[:20] + b"\x00" + images.webp_lossless()[21:],  # bad signature
        images.webp_extended()[:26],  # truncated
        images.webp_lossy()[:12] + b"ALPH" + images.webp_lossy()[16:],  # unknown first chunk
        images.png(0, 10),  # zero width
        images.gif(10, 0),  # zero height
    ],
)
def test_unreadable_headers_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImageError):
        inspect_image(data, MAX)


@pytest.mark.parametrize(
    "data",
    [
        images.png(100_000, 100_000),
        images.gif(65_535, 65_535),
        images.jpeg(65_535, 65_535),
        images.webp_extended(16_000_000, 16_000_000),
        images.webp_lossless(16_384, 16_384),
    ],
)
def test_pixel_flood_is_refused(data: bytes) -> None:
    with pytest.raises(ImageTooLargeError, match="pixels"):
        inspect_image(data, MAX)


def test_limit_is_inclusive() -> None:
    assert inspect_image(images.png(100, 100), 10_000).width == 100
    with pytest.raises(ImageTooLargeError):
        inspect_image(images.png(100, 101), 10_000)
