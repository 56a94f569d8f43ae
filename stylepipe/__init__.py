"""stylepipe: neural style transfer as a reproducible Prefect + DVC batch pipeline."""

__version__ = "0.1.0"
