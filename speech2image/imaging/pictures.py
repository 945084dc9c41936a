"""Images sent to be edited: checked from their headers before they are decoded, then decoded
whole with Pillow. Imports no model library (the gateway checks headers with it too)."""

import io
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InvalidRequest, TooLarge
from ..limits import EDIT_FORMATS, MAX_EDIT_IMAGE_BYTES, MAX_EDIT_IMAGE_PIXELS

FORMATS_SHOWN = "PNG, JPEG or WebP"


def checked_picture(data: bytes, what: str = "image"):
    """`data` opened from its header alone (a PIL image, not decoded), as the decoders take it:
    InvalidRequest (one line) unless it is a PNG, JPEG or WebP image of at most
    MAX_EDIT_IMAGE_PIXELS; TooLarge over MAX_EDIT_IMAGE_BYTES. The gateway checks a request's
    images so before any work; the executor again, then decodes them."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_EDIT_IMAGE_BYTES:
        raise TooLarge(f"{what} too large: {len(data)} bytes > {MAX_EDIT_IMAGE_BYTES} accepted; send a smaller file")
    too_many = f"{what} declares more than {MAX_EDIT_IMAGE_PIXELS} pixels"
    try:  # only these formats' parsers read the bytes
        picture = Image.open(io.BytesIO(data), formats=EDIT_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours
        raise InvalidRequest(f"{too_many}: send a smaller one") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequest(f"{what} is not a {FORMATS_SHOWN} file Pillow can read: send one") from None
    width, height = picture.size
    if width * height > MAX_EDIT_IMAGE_PIXELS:
        raise InvalidRequest(f"{too_many} ({width}x{height}): send a smaller one")
    return picture


def open_picture(data: bytes, what: str = "image"):
    """`data` checked (:func:`checked_picture`), decoded and turned upright as its EXIF says: a
    PIL image, RGBA where it has transparency, else RGB."""
    from PIL import ImageOps

    picture = checked_picture(data, what)
    try:
        picture.load()
        picture = ImageOps.exif_transpose(picture)
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
    no_area = "make the area to repaint transparent (alpha 0), OpenAI's rule"
    if mask.mode != "RGBA":
        raise InvalidRequest(f"mask has no transparency: {no_area}")
    area = Image.eval(mask.getchannel("A"), lambda alpha: 255 if alpha == 0 else 0)
    if area.getbbox() is None:
        raise InvalidRequest(f"mask has no transparent pixel, so nothing to repaint: {no_area}")
    return area


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
    """The Source of an edit's image and mask bytes (checked, decoded); None without an image. An
    image with transparent pixels and no mask is inpainted there, as OpenAI does."""
    if image is None:
        if mask is not None:
            raise InvalidRequest("a mask without an image: send the image to edit with it")
        return None
    picture = open_picture(image)
    if mask is not None:
        area = repaint_mask(open_picture(mask, "mask"), picture.size)
    elif picture.mode == "RGBA" and picture.getchannel("A").getextrema()[0] == 0:
        area = repaint_mask(picture, picture.size)  # no mask: the image's transparent area is repainted (OpenAI's)
    else:
        area = None
    return Source(picture.convert("RGB"), area)
