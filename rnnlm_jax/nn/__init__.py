"""Neural networks: the recurrences with their hand-written backward passes
(`recurrences`), the fast layers built on them (`fast_layers`), the recurrent stack
(`layer.RNNLayer`), the Dense head (`head`), initializers, the language model
(`models.RNNModel`), its description as values (`spec.ModelSpec`) and the model contract
every model of yours follows (`contract`).

`rnnlm_jax.nn` offers the names research code uses: `RNNLayer`, `RNNModel`, `ModelSpec`.
"""

from rnnlm_jax.nn.layer import RNNLayer  # noqa: F401
from rnnlm_jax.nn.models import RNNModel  # noqa: F401
from rnnlm_jax.nn.spec import ModelSpec  # noqa: F401
