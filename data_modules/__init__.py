"""Lightning DataModules of ctem (one per kind of training data)."""

from ctem.rows import BadRowReport, DataFormatError
from ctem.data_modules.base import LoaderConfig
from ctem.data_modules.pairs import PairDataModule
from ctem.data_modules.labeled import LabeledDataModule
from ctem.data_modules.corpus import PretrainCorpusDataModule

__all__ = ["BadRowReport", "DataFormatError", "LoaderConfig", "PairDataModule", "LabeledDataModule", "PretrainCorpusDataModule"]
