"""`python -m colord.training` (so `torchrun -m colord.training ...` works): `colord train`."""

from colord.training.cli import train_command

if __name__ == "__main__":
    train_command(prog_name="colord train")
