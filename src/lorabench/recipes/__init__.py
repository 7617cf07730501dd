"""recipes: what the multi-run commands run — a comparison, a sweep — on top of the pipeline (`lorabench.pipeline`,
one experiment). They import the library, never each other."""
