"""Lightning callbacks built by Hydra from ``conf/callbacks/*.yaml``."""

from callbacks.cmteb_eval import CMTEBEvalCallback

__all__ = ["CMTEBEvalCallback"]
