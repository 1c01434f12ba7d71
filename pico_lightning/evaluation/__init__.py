"""Evaluation: suites of scored episodes (segmentation, user-defined tasks, PerSeg) and their metrics."""
