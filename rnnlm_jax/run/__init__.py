"""Running things from the command line: the flags (`app`), the modes and their one-line
errors (`cli`) and sweeps over a cluster (`sweeps`)."""
