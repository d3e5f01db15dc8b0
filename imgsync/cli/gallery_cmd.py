"""`imgsync gallery ...`: serve and inspect the local gallery."""

from __future__ import annotations

import click

from imgsync.cli import cli


@cli.group()
def gallery() -> None:
    """The local gallery: an image-search server speaking the cloud's protocol."""
