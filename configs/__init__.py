"""The config files (``--config configs/<name>.py[:variant]``), shipped with the package as
``jaxdarts.configs`` so they load from any directory after a plain ``pip install``
(:func:`jaxdarts.config.resolve_path`)."""
