"""ENAS in one process (Pham et al. 2018): the controller's policy (``EnasStrategy``) and
the trainer's shared-weight supernet trained in turn. It sits above the two rooms, which
never import each other; ``kubenas run`` with ``strategy: enas`` runs it (``run_local``)."""
