"""inference: label new rows with a finished run (predict), export it as a portable model folder (export)."""
