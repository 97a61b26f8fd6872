"""Config: the tables of every job's fields (`fields`: type, range, default, help) and the
checks that tie fields together and build the model a config describes (`checks`)."""

from rnnlm_jax.config.checks import ConfigError, model_from_config, validate  # noqa: F401
