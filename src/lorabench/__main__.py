"""`python -m lorabench`: what launchers run (`torchrun --nproc_per_node N -m lorabench train CONFIG`,
`accelerate launch -m lorabench ...`)."""
import sys

from lorabench.cli import main

if __name__ == "__main__":
    sys.exit(main())
