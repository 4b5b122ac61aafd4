"""Everything Triton: the generated model configs (:mod:`.config`) checked against Triton's own schema
(:mod:`.schema`), the repository writer (:mod:`.repository`: assemble, validate, manifest, atomic publish), the local
view that ``exporter serve`` derives for the python-backend-only binary (:mod:`.local_view`), the python-backend
models (``models/``) and the runtime loaders they run (``runtime/``).

``models/`` and ``runtime/`` are copied verbatim into Triton model directories, so they never import ``exporter``.
"""
