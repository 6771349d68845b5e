"""kinloop: a membership growth engine for brands and communities."""

__version__ = "0.1.0"
