"""The installed distribution's version: the one source is ``pyproject.toml``."""

from importlib import metadata

try:
    __version__ = metadata.version("photocomp")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
