"""speedups: training levers that change no result (CPU: fast dropout masks, pooled token only in the last
layer), applied for a run and undone after it (cpu)."""
