"""Writing files so that a reader never sees a half-written one."""
import json
import os
import os.path as osp
import uuid
from typing import Tuple, Union


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


def write_atomic(path: str, content: Union[str, bytes]) -> None:
    """Write ``content`` to a temporary file beside ``path``, flush it to
    disk, then rename it over ``path``: a crash leaves the old file or the
    new one, never a mix. Creates the folder if needed."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = create_temp_file(directory, f'.{osp.basename(path)}.', '.tmp')
    try:
        with os.fdopen(fd, 'wb' if isinstance(content, bytes) else 'w') as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json_atomic(path: str, data, indent: int = 2) -> None:
    """:func:`write_atomic` of ``data`` as JSON."""
    write_atomic(path, json.dumps(data, indent=indent))
