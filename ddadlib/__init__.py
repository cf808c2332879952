"""ddadlib: Dual-Distribution Discrepancy (DDAD) for anomaly detection in chest X-rays.

For research and teaching only; not for clinical use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ddadlib")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from ddadlib.errors import DataError

__all__ = ["DataError", "__version__"]
