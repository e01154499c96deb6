"""The ``embeddings`` template: text embeddings (OpenAI ``/v1/embeddings``) with a transformers encoder from the
endpoint's volume. See :mod:`.handler` for the job shapes and :mod:`.__main__` for its env."""
