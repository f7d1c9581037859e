"""dropbn: measure what dropout and batch normalization do to a network."""
__version__ = "0.1.0"
