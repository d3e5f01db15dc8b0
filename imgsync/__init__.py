"""imgsync: keep a folder of images and an image-search gallery library in step."""

__version__ = "0.1.0"
