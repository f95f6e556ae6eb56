"""ctem: train general-purpose text-embedding models with the C-Pack / BGE recipe."""

__version__ = "0.1.0"

from ctem.encoder import TextEncoder  # noqa: E402
from ctem.losses import InfoNCELoss  # noqa: E402

__all__ = ["TextEncoder", "InfoNCELoss", "__version__"]
