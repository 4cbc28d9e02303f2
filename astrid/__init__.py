"""AstrID: find astronomical transients in difference images."""

__version__ = "0.1.0"
