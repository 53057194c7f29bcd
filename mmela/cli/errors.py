"""Errors a user has to fix, and how the tools report them: one
``error: ...`` line each, no traceback, a non-zero exit status."""
import contextlib
import os
import sys
from typing import Iterator, List

from ..deployment.model import DeployError
from ..hooks import ELAPruningError


class ConfigError(Exception):
    """Something the user has to fix in the config or on the command line;
    the message says what, in one line."""


class ConfigErrors(ConfigError):
    """Several :class:`ConfigError` found in one pass, in the order found."""

    def __init__(self, errors: List[ConfigError]):
        self.errors = list(errors)
        super().__init__('\n'.join(map(str, self.errors)))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`ConfigError` (or a deployment tool's ``DeployError``)
    into ``error:`` lines on stderr (one per problem) and exit status 2
    (argparse's status for bad usage), and an
    :class:`ELAPruningError` raised while training (a diverged loss, a window
    with nothing to measure) into one ``error:`` line and exit status 1."""
    try:
        yield
    except (ConfigError, DeployError) as e:
        print_errors(getattr(e, 'errors', [e]))
        sys.exit(2)
    except ELAPruningError as e:
        # Every rank stops with this line (the hook decides on all ranks
        # together); each rank's log says why it stopped.
        print_errors([e], every_rank=True)
        sys.exit(1)


def print_errors(errors, every_rank: bool = False) -> None:
    # Under torchrun every rank fails the same way: say it once.
    if every_rank or os.environ.get('RANK', '0') == '0':
        for error in errors:
            message = ' '.join(str(error).split())
            print(f'error: {message}', file=sys.stderr)
