"""The installed version of zlimit (from the package metadata, the one place it is written)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zlimit")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
