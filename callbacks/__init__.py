"""Lightning callbacks built by Hydra from ``conf/callbacks/*.yaml``."""

from callbacks.cmteb_eval import CMTEBEvalCallback
from callbacks.hard_negative_refresh import HardNegativeRefresh
from callbacks.progress import StepProgressBar

__all__ = ["CMTEBEvalCallback", "HardNegativeRefresh", "StepProgressBar"]
