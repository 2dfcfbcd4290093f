"""kubenas: Neural Architecture Search with reinforcement learning, Kubernetes-native."""

__version__ = "0.1.0"
