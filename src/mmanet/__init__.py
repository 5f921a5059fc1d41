"""mmanet: incomplete multimodal learning with MMANet and its baselines."""

__version__ = "0.1.0"
