"""diffusers integration: attention processors for regional cross-attention and Q/K injection.

Importing this module needs diffusers only where a processor is installed; the processors work on the plain
``Attention`` layers of a ``UNet2DConditionModel`` (SD1.x, SD2.x, SDXL) through ``unet.set_attn_processor``;
:func:`install_regional_processors` leaves layers with added key/value projections (DeepFloyd IF, unCLIP,
Kandinsky 2.1) to their own processors. :func:`speed_up` drops SDPA and the fused ops into pipelines users
already run (LEDITS++ on SD and SDXL).
"""

from .ale import ALE_BATCH, QK_INJECTION_PAIRS, TARGET_COND, ale_attention_kwargs, ale_region_spec
from .install import ProcessorHandle, install_regional_processors
from .processor import RegionalAttnProcessor
from .regions import RegionSpec, Routing, latent_grid
from .speed_up import SUPPORTED_PIPELINES, SpeedUpHandle, speed_up

__all__ = [
    "ALE_BATCH",
    "QK_INJECTION_PAIRS",
    "SUPPORTED_PIPELINES",
    "TARGET_COND",
    "ProcessorHandle",
    "RegionSpec",
    "RegionalAttnProcessor",
    "Routing",
    "SpeedUpHandle",
    "ale_attention_kwargs",
    "ale_region_spec",
    "install_regional_processors",
    "latent_grid",
    "speed_up",
]
