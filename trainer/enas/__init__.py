"""ENAS (Pham et al. 2018) on the trainer side: the shared-weight supernet of the
``enas_macro`` space, its standalone children, and the shared-weight training steps.
The policy lives in the controller; ``kubenas.enas`` runs the two in turn."""

from typing import Mapping

from kubenas.contracts import Architecture, ContractError
from kubenas.contracts.architecture import VALIDATORS
from kubenas.trainer.errors import ArchitectureError


def validated_spec(architecture, space: str) -> Mapping:
    """The spec of a ``space`` Architecture, its dict form, or a bare spec, validated; a
    wrong space or spec is an :class:`ArchitectureError` (a failed result, not a crash)."""
    if isinstance(architecture, Mapping) and "spec" in architecture:
        try:
            architecture = Architecture.from_dict(architecture)
        except ContractError as exc:
            raise ArchitectureError(str(exc)) from None
    if isinstance(architecture, Architecture):
        if architecture.space != space:
            raise ArchitectureError(f"architecture.space: needs {space!r}, got {architecture.space!r}")
        architecture = architecture.spec
    try:
        VALIDATORS[space](architecture, "architecture.spec")
    except ContractError as exc:
        raise ArchitectureError(str(exc)) from None
    return architecture
