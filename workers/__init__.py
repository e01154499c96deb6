"""Workers shipped with gpuform: the echo handler and the vLLM worker."""
