"""Errors shared by every room."""


class ContractError(ValueError):
    """A document (architecture, result record, experiment spec) that breaks its contract.

    The message always starts with the dotted path of the offending field, e.g.
    ``experiment.search.space.filter_heights[2]: must be a positive integer, got 0``.
    """
