"""ContribFlow: daily tax-contribution files into an audited PostgreSQL warehouse."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("contribflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
