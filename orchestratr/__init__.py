"""orchestratr: a local process supervisor for desktop apps."""

__version__ = "0.1.0"
