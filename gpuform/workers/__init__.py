"""Workers shipped with gpuform (the templates of `gpuform templates`): echo, vLLM, embeddings and pytorch."""
