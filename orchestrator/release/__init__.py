"""Release control plane (issue 19): registry layers and release bundles on MLflow.

``components`` says what the project ships as registry params (pure); ``registry`` creates and
reads the MLflow objects; ``cli`` is ``mangaassist-release``. Never imported by the request path.
"""
