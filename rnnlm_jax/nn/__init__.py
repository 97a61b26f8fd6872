"""Neural networks: the recurrences with their hand-written backward passes
(`recurrences`), the fast layers built on them (`fast_layers`), the recurrent stack
(`layer.RNNLayer`), the Dense head (`head`), initializers, the language model
(`models.RNNModel`), its description as values (`spec.ModelSpec`) and the model contract
every model of yours follows (`contract`)."""
