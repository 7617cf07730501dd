"""recipes: what the commands run — one experiment, a comparison, a sweep. They import the library, never
each other."""
