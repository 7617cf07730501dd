"""pipeline: where the steps meet. One run (run: config -> data -> model -> train -> evaluate -> record, resumable
and atomic), its refit on train + val (refit), and several runs of one comparison into one folder (comparison).
Library code: the recipes (`lorabench.recipes`) drive it."""
