"""The embedded default: children as local processes, results on the local filesystem."""
