"""Image decoding and validation (see :mod:`liveness.imaging.decode`)."""

from liveness.imaging.decode import (
    SUPPORTED_FORMATS,
    DecodedImage,
    ImageLimits,
    apply_orientation,
    decode_image,
    decode_image_file,
    jpeg_reduction,
    sniff_format,
    strip_data_uri_and_b64decode,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageLimits",
    "apply_orientation",
    "decode_image",
    "decode_image_file",
    "jpeg_reduction",
    "sniff_format",
    "strip_data_uri_and_b64decode",
]
