"""Lightning callbacks built by Hydra from ``conf/callbacks/*.yaml``."""

from ctem.callbacks.cmteb_eval import CMTEBEvalCallback
from ctem.callbacks.epoch_boundary import EpochBoundaryResume
from ctem.callbacks.hard_negative_refresh import HardNegativeRefresh
from ctem.callbacks.interrupt import InterruptCheckpoint
from ctem.callbacks.nonfinite import NonFiniteGuard
from ctem.callbacks.progress import StepProgressBar

__all__ = ["CMTEBEvalCallback", "EpochBoundaryResume", "HardNegativeRefresh", "InterruptCheckpoint", "NonFiniteGuard", "StepProgressBar"]
