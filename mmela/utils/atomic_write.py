"""Writing files so that a reader never sees a half-written one."""
import json
import os
import os.path as osp
import tempfile
from typing import Union


def give_default_mode(path: str) -> None:
    """Give ``path`` the permissions ``open()`` would have given a new file
    (0o666 less the umask): ``tempfile.mkstemp`` makes its files private to
    their owner, which a file renamed into place should not stay."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_atomic(path: str, content: Union[str, bytes]) -> None:
    """Write ``content`` to a temporary file beside ``path``, flush it to
    disk, then rename it over ``path``: a crash leaves the old file or the
    new one, never a mix. Creates the folder if needed."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{osp.basename(path)}.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb' if isinstance(content, bytes) else 'w') as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        give_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json_atomic(path: str, data, indent: int = 2) -> None:
    """:func:`write_atomic` of ``data`` as JSON."""
    write_atomic(path, json.dumps(data, indent=indent))
