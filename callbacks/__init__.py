"""Lightning callbacks built by Hydra from ``conf/callbacks/*.yaml``."""

from ctem.callbacks.cmteb_eval import CMTEBEvalCallback
from ctem.callbacks.hard_negative_refresh import HardNegativeRefresh
from ctem.callbacks.progress import StepProgressBar

__all__ = ["CMTEBEvalCallback", "HardNegativeRefresh", "StepProgressBar"]
