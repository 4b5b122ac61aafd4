"""In-process stand-ins for what the unit tier cannot start: Triton's python-backend utilities
(:mod:`fakes.pb_utils`, with :func:`fakes.python_models.load_python_model` to import a served model file against
them) and Triton's KServe v2 HTTP API (:class:`fakes.kserve.FakeTriton`, for both client twins).

They imitate only what the project uses, as Triton behaves (status codes, error bodies, tensor encodings); the e2e
tier checks the same behaviour against the real server."""
