"""Lightning DataModules of ctem (one per kind of training data)."""

from ctem.data_modules.formats import BadRowReport, DataFormatError
from ctem.data_modules.pairs import PairDataModule
from ctem.data_modules.labeled import LabeledDataModule
from ctem.data_modules.corpus import PretrainCorpusDataModule

__all__ = ["BadRowReport", "DataFormatError", "PairDataModule", "LabeledDataModule", "PretrainCorpusDataModule"]
