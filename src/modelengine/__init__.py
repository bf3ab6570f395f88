"""ModelEngine: PyTorch models to inference engines for every GPU kind, stored and served."""

__version__ = "0.1.0"
