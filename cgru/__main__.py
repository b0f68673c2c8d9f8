"""Command line: `cgru` / `python -m cgru`. With no arguments, runs the demonstration."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cgru", description="A PyTorch-exact GRU for CPUs.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("demo", help="build a GRU, run it, print shapes and timing (default)")
    commands.add_parser("info", help="version, build configuration, threads, BLAS")
    args = parser.parse_args(argv)
    if args.command == "info":
        from ._config import show_config
        show_config()
    else:
        from ._demo import run_demo
        run_demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
