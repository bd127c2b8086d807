"""esnode operator: EsnodeFleet -> agent DaemonSets, ServiceMonitor and fleet power status."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("esnode")  # the one version: pyproject's, as installed
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
