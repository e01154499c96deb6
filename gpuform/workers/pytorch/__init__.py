"""The ``pytorch`` template: a plain PyTorch model (TorchScript ``.pt`` or ``torch.export`` ``.pt2``) from the
endpoint's volume; tensors in and out as nested lists. See :mod:`.handler` for the job shape."""
