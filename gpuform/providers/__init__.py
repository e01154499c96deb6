"""Providers shipped with gpuform, registered as `gpuform.providers` entry points."""
