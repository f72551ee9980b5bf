"""How the command line fails: one line on stderr and an exit code (2 bad input, 1 runtime failure, 130
interrupted), for click's usage errors and the API's errors alike; of several processes, rank 0 alone reports
bad input."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import click

from noisysam.run import distributed
from noisysam.run.loop import TrainingDiverged


def fail(message: str, code: int) -> None:
    """One line on stderr and exit ``code``; of several processes of one run, rank 0 alone reports bad input
    (every rank finds the same) and the others prefix their runtime errors with their rank."""
    rank = distributed.env_rank()
    if rank == 0 or code != 2:
        click.echo(f"error: {'' if rank == 0 else f'rank {rank}: '}{' '.join(str(message).split())}", err=True)
    raise SystemExit(code)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.strerror}: {e.filename}"
    return str(e)


@contextmanager
def user_errors(on_interrupt: str) -> Iterator[None]:
    """API errors -> one line on stderr and an exit code (see the module docstring). --method-param and
    --model-param values are checked by the method's and model's parameter tables (noisysam.core.params)."""
    try:
        yield
    except KeyboardInterrupt:
        if distributed.env_rank() == 0:
            click.echo(f"\n{on_interrupt}", err=True)
        raise SystemExit(130) from None
    except TrainingDiverged as e:
        fail(str(e), 1)
    except EOFError as e:  # a file ended early; click would report it as an interrupt (exit 130)
        fail(f"unexpected end of a file ({e or 'no more data'})", 2)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
            NotADirectoryError) as e:  # bad names, values or paths (an --out that cannot be created)
        fail(_message(e), 2)
    except (RuntimeError, OSError) as e:
        fail(_message(e), 1)


class Group(click.Group):
    """click's usage errors (unknown option, value out of range, bad choice) as one line on stderr, exit 2,
    like the API's errors; ``standalone_mode=False`` keeps click's plain behaviour for embedding."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name or "noisysam", complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            code = 0
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            code = 130
        sys.exit(code if isinstance(code, int) else 0)
