"""Ablation sweeps: the ablation file (``spec``), its launchers (``launch``) and the report (``report``)."""
