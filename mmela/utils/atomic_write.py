"""Writing files so that a reader never sees a half-written one."""
import contextlib
import json
import os
import os.path as osp
import uuid
from typing import Iterator, Tuple, Union


def create_temp_file(directory: str, prefix: str,
                     suffix: str) -> Tuple[int, str]:
    """Create a new file with a unique name in ``directory`` and return
    ``(fd, path)``, like ``tempfile.mkstemp`` but with the permissions
    ``open()`` gives a new file (0o666 less the umask, applied by the
    system) rather than mkstemp's owner-only ones, since the file is
    renamed into place as the result."""
    while True:
        path = osp.join(directory, f'{prefix}{uuid.uuid4().hex[:12]}{suffix}')
        try:
            return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                           0o666), path
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = '.tmp') -> Iterator[str]:
    """A new empty file beside ``path`` (named ``.<name>.<random><suffix>``)
    for the body to write; renamed over ``path`` when the body succeeds,
    removed when it fails, so ``path`` is either the whole new file or
    untouched. The folder must exist."""
    fd, tmp = create_temp_file(osp.dirname(osp.abspath(path)),
                               f'.{osp.basename(path)}.', suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_atomic(path: str, content: Union[str, bytes]) -> None:
    """Write ``content`` through :func:`atomic_path`, flushed to disk before
    the rename: a crash leaves the old file or the new one, never a mix.
    Creates the folder if needed."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, 'wb' if isinstance(content, bytes) else 'w') as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str, data, indent: int = 2) -> None:
    """:func:`write_atomic` of ``data`` as JSON."""
    write_atomic(path, json.dumps(data, indent=indent))
