"""The CPU demo: its driver (``python -m pico_lightning.demo``) and the recipe of its shipped base
(``python -m pico_lightning.demo.tiny_base``, pretrained on the generic grids of ``generic_grids``)."""
