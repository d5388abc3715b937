"""merit-collect: a field data-collection server for ODK Collect."""

__version__ = "0.1.0"
