"""RetroMAE pre-training parts: mask sampling, the enhanced decoder, the MLM head and their files."""

from ctem.retromae.checkpoint import DECODER_DIR_NAME, load_decoder, save_decoder
from ctem.retromae.decoder import EnhancedDecoderLayer
from ctem.retromae.fused_loss import fused_linear_cross_entropy
from ctem.retromae.masking import PADDING, SPECIAL, corrupt_for_mlm, decoder_attention_mask, sample_unit_masks
from ctem.retromae.mlm_head import MLMHead, load_pretrained_mlm_head

__all__ = [
    "DECODER_DIR_NAME",
    "EnhancedDecoderLayer",
    "MLMHead",
    "PADDING",
    "SPECIAL",
    "corrupt_for_mlm",
    "decoder_attention_mask",
    "fused_linear_cross_entropy",
    "load_decoder",
    "load_pretrained_mlm_head",
    "sample_unit_masks",
    "save_decoder",
]
