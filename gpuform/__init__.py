"""gpuform: serverless GPU endpoints on your own machines, declared in YAML and applied like Terraform."""

__version__ = "0.1.0"
