"""LightningModules, one per training stage, on the shared base ``EncoderStage``."""

from ctem.modules.bi_encoder import BiEncoderModule
from ctem.modules.multitask import MultiTaskModule
from ctem.modules.retromae import RetroMAEModule
from ctem.modules.stage import EncoderStage

__all__ = ["BiEncoderModule", "EncoderStage", "MultiTaskModule", "RetroMAEModule"]
