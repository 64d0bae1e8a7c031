"""tenfold: ten 2024 deep-learning papers as reusable PyTorch methods, each with a CPU-scale
reproduction of its key claim (see ``tenfold list`` and ``docs/REPORT.md``)."""

__version__ = "0.1.0"
