"""nm-toolkit: network-management intelligence after NetGPT."""

__version__ = "0.1.0"
