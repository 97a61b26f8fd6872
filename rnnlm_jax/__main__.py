"""`python -m rnnlm_jax ...`: the same command line as `main.py` (sweeps launch their trials
this way, so an installed package sweeps without the repository beside it)."""

from rnnlm_jax.run import app

if __name__ == "__main__":
    app.run()
