"""ENAS (Pham et al. 2018) on the trainer side: the shared-weight supernet of the
``enas_macro`` space, its standalone children, and the shared-weight training steps.
The policy lives in the controller; ``kubenas.enas`` runs the two in turn."""
