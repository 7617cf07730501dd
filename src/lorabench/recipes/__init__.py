"""recipes: the workflows the command line and the Python API run, each returning a typed result — one experiment
and its k-fold estimate (experiment: `train`, `kfold`), the refit of a finished run on train + val (refit), a
comparison of several models with its ensemble row (compare), a hyperparameter sweep (sweep). They drive the
library (`lorabench.pipeline` and below) and import it, never each other; `lorabench.cli` and `lorabench.api`
only parse, dispatch and print or wrap."""
