"""bn-compare: train networks with and without batch normalization under identical conditions."""

__version__ = "0.1.0"
