"""Lightning DataModules of ctem (one per kind of training data)."""

from data_modules.formats import BadRowReport, DataFormatError
from data_modules.pairs import PairDataModule
from data_modules.labeled import LabeledDataModule
from data_modules.corpus import PretrainCorpusDataModule

__all__ = ["BadRowReport", "DataFormatError", "PairDataModule", "LabeledDataModule", "PretrainCorpusDataModule"]
