"""Data, in the order it flows: where corpora come from (`sources`, `archives`), text read
in blocks (`textstream`), tokens (`vocab`, `tokenizers`), token files (`tokenfiles`),
minibatches (`batching`), and which corpus a run reads (`corpora`). `rnnlm_jax.data` itself
offers the names research code uses (`load_corpus`, `epoch_batches`, `EpochBatches`,
`Vocab`, the tokenizers, ...)."""

from rnnlm_jax.data.batching import (  # noqa: F401
    PARTITIONS,
    EpochBatches,
    epoch_batches,
    eval_batches,
    held_out_batches,
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
from rnnlm_jax.data.tokenizers import (  # noqa: F401
    TOKENIZERS,
    ByteTokenizer,
    SentencePieceTokenizer,
)
from rnnlm_jax.data.vocab import TOKEN_TYPES, Vocab, clean_lines, tokenize  # noqa: F401
