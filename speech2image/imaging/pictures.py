"""Images sent to be edited: checked from their headers before they are decoded, then decoded
whole with Pillow. Imports no model library (the gateway and the client use it too)."""

import io
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InvalidRequest, TooLarge
from ..limits import EDIT_FORMATS, MAX_EDIT_IMAGE_BYTES, MAX_EDIT_IMAGE_PIXELS

FORMATS_SHOWN = ", ".join("WebP" if name == "WEBP" else name for name in EDIT_FORMATS)


def open_picture(data: bytes, what: str = "image"):
    """`data` as a decoded PIL image, RGBA or RGB; InvalidRequest (one line) for what is not a
    PNG, JPEG or WebP image, or declares more than MAX_EDIT_IMAGE_PIXELS; TooLarge over
    MAX_EDIT_IMAGE_BYTES."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_EDIT_IMAGE_BYTES:
        raise TooLarge(f"{what} too large: {len(data)} bytes > {MAX_EDIT_IMAGE_BYTES} accepted; send a smaller file")
    too_many = f"{what} declares more than {MAX_EDIT_IMAGE_PIXELS} pixels"
    try:
        picture = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours
        raise InvalidRequest(f"{too_many}: send a smaller one") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequest(f"{what} is not an image Pillow can read: send a {FORMATS_SHOWN} file") from None
    if picture.format not in EDIT_FORMATS:
        raise InvalidRequest(f"{what} is {picture.format}: send a {FORMATS_SHOWN} file")
    width, height = picture.size
    if width * height > MAX_EDIT_IMAGE_PIXELS:
        raise InvalidRequest(f"{too_many} ({width}x{height}): send a smaller one")
    try:
        picture.load()
    except Exception as e:  # truncated or corrupt data, whichever decoder raised
        raise InvalidRequest(f"{what} could not be decoded ({type(e).__name__}): send a whole {FORMATS_SHOWN} "
                             "file") from None
    return picture.convert("RGBA" if "A" in picture.getbands() or "transparency" in picture.info else "RGB")


def repaint_mask(mask, size: tuple[int, int]):
    """OpenAI's mask (transparent where the image is repainted) as diffusers takes it: a greyscale
    image, white where it repaints. InvalidRequest for a mask of another size, or with no alpha."""
    from PIL import Image

    if mask.size != tuple(size):
        raise InvalidRequest(f"mask is {mask.size[0]}x{mask.size[1]}, the image {size[0]}x{size[1]}: send a mask of "
                             "the image's size")
    if mask.mode != "RGBA":
        raise InvalidRequest("mask has no transparency: make the area to repaint transparent (alpha 0), OpenAI's rule")
    return Image.eval(mask.getchannel("A"), lambda alpha: 255 if alpha == 0 else 0)


@dataclass(frozen=True)
class Source:
    """What an edit starts from: the image (PIL, RGB) and, for inpainting, the area to repaint
    (PIL, greyscale: white there)."""

    image: Any
    mask: Optional[Any] = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def edit_source(image: Optional[bytes], mask: Optional[bytes] = None) -> Optional[Source]:
    """The Source of an edit's image and mask bytes (checked, decoded); None without an image."""
    if image is None:
        if mask is not None:
            raise InvalidRequest("a mask without an image: send the image to edit with it")
        return None
    picture = open_picture(image)
    area = repaint_mask(open_picture(mask, "mask"), picture.size) if mask is not None else None
    return Source(picture.convert("RGB"), area)
