"""The two contracts joining the rooms: the architecture description and the result record."""

from kubenas.contracts.architecture import Architecture
from kubenas.contracts.errors import ContractError
from kubenas.contracts.result import Cost, EpochMetrics, ResultRecord, result_key

__all__ = ["Architecture", "ContractError", "Cost", "EpochMetrics", "ResultRecord", "result_key"]
