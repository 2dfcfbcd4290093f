"""The contracts joining the rooms (``controller/``, ``trainer/``, ``operator/``).

The rooms never import each other (``.importlinter``: rooms-independent). What they share is
this list, and nothing else:

1. the architecture description: ``Architecture`` (``kubenas.contracts.architecture``);
2. the result record: ``ResultRecord``, ``EpochMetrics``, ``Cost``, ``result_key``
   (``kubenas.contracts.result``);
3. the executor and result-source interfaces the search loop talks to: ``TrialRequest``,
   ``TrialRefused``, ``Executor``, ``ResultSource`` (``kubenas.contracts.execution``);
4. the experiment spec: ``kubenas.experiment`` (``Experiment``, ``parse_experiment``,
   ``load_experiment``), the document every room is configured by;

with ``ContractError``, the field checks every parser uses (``kubenas.contracts.fields``),
the registered names (``kubenas.contracts.names``) and the storage interface
(``kubenas.storage.ObjectStore``) beneath them. Code outside a room uses the room only
through its package's public surface (``kubenas.controller``, ``kubenas.trainer``,
``kubenas.operator``: each ``__init__`` lists its own ``SURFACE``), never its modules
(``.importlinter``: rooms-used-through-their-surface).
"""

from kubenas.contracts.architecture import Architecture
from kubenas.contracts.errors import ContractError
from kubenas.contracts.execution import Executor, ResultSource, TrialRefused, TrialRequest
from kubenas.contracts.result import Cost, EpochMetrics, ResultRecord, result_key

__all__ = ["Architecture", "ContractError", "Cost", "EpochMetrics", "Executor", "ResultRecord",
           "ResultSource", "TrialRefused", "TrialRequest", "result_key"]
