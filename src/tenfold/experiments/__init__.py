"""One module per paper's reproduction; each defines ``EXPERIMENT`` (see ``tenfold.experiment``).

The registry finds every module here that defines ``EXPERIMENT``; nothing else needs editing.
"""
