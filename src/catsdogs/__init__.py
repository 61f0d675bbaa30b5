"""catsdogs: a folder of two kinds of photos -> a trained, evaluated, explainable classifier."""

__version__ = "0.1.0"
