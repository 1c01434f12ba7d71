"""Grid-size rule shared by the config check and the panel composer (pure Python, no torch).

FLUX packs latents in 2x2 patches over a scale-8 autoencoder, so every grid side must be a multiple of 16 pixels.
"""

from math import gcd

from pico_lightning.errors import UserError

PACK = 16


def check_grid_side(panel_size: int, panels: int, name: str) -> None:
    """Raise UserError naming the nearest valid panel sizes when ``panels * panel_size`` does not pack."""
    if (panels * panel_size) % PACK == 0:
        return
    step = PACK // gcd(PACK, panels)
    below = (panel_size // step) * step
    valid = [size for size in (below, below + step) if size > 0]
    raise UserError(
        f"panel size {panel_size}: {name}*panel_size={panels * panel_size} must be a multiple of {PACK} "
        f"(2x2 latent packing); nearest valid panel sizes: {valid}"
    )
