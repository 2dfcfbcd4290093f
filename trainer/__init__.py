"""The child: builds the network an architecture describes, trains it, writes its result."""
