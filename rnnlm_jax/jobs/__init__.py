"""The jobs the run loop trains (`rnnlm_jax.train.loop`), one per value of `config.job`: the
language model (`lm`), the sweep's trials at once (`population`) and exercise 3's sine
regressor (`sine`)
and the state-tracking and recall tasks (`synthetic`). A job of your own subclasses
`loop.Job` the same way."""

import importlib

JOBS = {  # config.job -> (module, class)
    "lm": ("lm", "LanguageModelJob"),
    "population": ("population", "PopulationJob"),
    "sine": ("sine", "SineJob"),
    "synthetic": ("synthetic", "SyntheticJob"),
}


def make(config, trials=None):
    """The job `config.job` names (population mode takes the sweep's `trials`)."""
    name = config.get("job", "lm")
    module, cls = JOBS.get(name, JOBS["lm"])
    job_class = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return job_class(config, trials) if name == "population" else job_class(config)


def run(config, workdir, trials=None):
    """Runs (or resumes) the job `config.job` names in `workdir`; returns the run loop's
    `RunResult`."""
    from rnnlm_jax.train import loop

    return loop.run(make(config, trials), workdir)
