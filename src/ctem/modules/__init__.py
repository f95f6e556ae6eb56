"""LightningModules, one per training stage."""

from ctem.modules.bi_encoder import BiEncoderModule

__all__ = ["BiEncoderModule"]
