"""Runtime loaders for artefacts. Each module is a self-contained single file (no ``exporter`` imports): the
Triton repository writer copies it verbatim into python-backend model directories."""
