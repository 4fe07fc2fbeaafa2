"""MLX training workbench: fine-tune (SFT, LoRA, QLoRA) and serve LLMs with MLX."""

from workbench.blas import load_fast_blas

# Must run before anything imports mlx.core, or MLX keeps the slow reference BLAS.
load_fast_blas()

__version__ = "0.1.0"
