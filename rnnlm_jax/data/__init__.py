"""Data: where corpora come from (`sources`), what they are (`corpora`), their tokens
(`vocab`) and their minibatches (`batching`). `rnnlm_jax.data` itself offers the names of
all of them that research code uses (`load_corpus`, `epoch_batches`, `Vocab`, ...)."""

from rnnlm_jax.data.batching import (  # noqa: F401
    PARTITIONS,
    epoch_batches,
    eval_batches,
    load_corpus,
    num_batches_per_epoch,
    seq_data_iter_random,
    seq_data_iter_sequential,
)
from rnnlm_jax.data.sources import (  # noqa: F401
    DATA_DIR_ENV,
    TIME_MACHINE_SHA1,
    DataError,
    DownloadStopped,
    default_data_dir,
    download,
    find_time_machine,
    sha1_of,
)
from rnnlm_jax.data.vocab import TOKEN_TYPES, Vocab, clean_lines, tokenize  # noqa: F401
