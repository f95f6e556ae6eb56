"""Lightning DataModules of ctem (one per kind of training data)."""

from data_modules.formats import BadRowReport, DataFormatError
from data_modules.pairs import PairDataModule

__all__ = ["BadRowReport", "DataFormatError", "PairDataModule"]
