"""Accuracy evaluation on a labelled set (``python -m liveness evaluate``, docs/ACCURACY.md).

* ``metrics``: ISO/IEC 30107-3 figures (APCER per attack type, APCER_max, BPCER, ACER, FTA)
  with Wilson intervals, and threshold choice for a target; pure, no I/O.
* ``dataset``: the labels CSV.
* ``runner``: the items through the serving pipeline (``LivenessApp``), in-process.
* ``report``: per-item CSV, JSON / Markdown summaries, DET curve and histograms.

Importing this package loads none of the models or plotting libraries.
"""
