"""The package's version, recorded in every run directory (config.json) and checked when a run resumes."""

__version__ = "0.2.0"
