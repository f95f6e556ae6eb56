"""LightningModules, one per training stage."""

from ctem.modules.bi_encoder import BiEncoderModule
from ctem.modules.multitask import MultiTaskModule
from ctem.modules.retromae import RetroMAEModule

__all__ = ["BiEncoderModule", "MultiTaskModule", "RetroMAEModule"]
