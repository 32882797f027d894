"""The user's traceback of a failed function, carried across a sandbox's boundary.

A sandbox cannot read files, so it reports the frames of the user's code alone (file, line,
function: :func:`user_frames`); the worker formats them (:func:`format_traceback`) the way
Python does, adding source lines only from the files of modules the worker itself has
loaded (a script run with ``dd.run``, the user's modules), never from a path a function
merely names.  Frames of Dandelion's own runtime that lead into the function are left out.
Where the error reaches the caller from another process (a Ray worker, a server that never
loaded the user's script), the caller adds the source lines of its own files
(:func:`with_sources`).  Source text a worker was given (a registered Python source) is
compiled under a name of its own (:func:`source_name`) and shown under the file name the
client gave, with its lines (:func:`remember_source`): never the worker's own paths.

>>> def fail():
...     raise ValueError("bad")
>>> try:
...     fail()
... except ValueError as e:
...     frames = user_frames(e.__traceback__)
>>> [name for _file, _line, name in frames]
['<module>', 'fail']
>>> print(format_traceback([("job.py", 3, "f")], "ValueError", "bad"))
Traceback (most recent call last):
  File "job.py", line 3, in f
ValueError: bad
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import types
from typing import Sequence

import dandelion
import dandelion.backends

#: How many frames a traceback keeps (the innermost ones).
MAX_FRAMES = 50

Frame = tuple[str, int, str]  # file, line, function

#: Where Dandelion's own modules are (as imported, and resolved), compared as strings: a
#: sandbox may not even ``stat`` a path.
_RUNTIME = tuple({f(os.path.dirname(p)) + os.sep
                  for p in (dandelion.__file__, getattr(dandelion.backends, "__file__", None))
                  if p
                  for f in (os.path.abspath, os.path.realpath)})


def user_frames(tb: types.TracebackType | None) -> list[Frame]:
    """The frames of ``tb`` from the first one outside Dandelion's runtime on (reads no
    file: it runs inside sandboxes)."""
    frames: list[Frame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if frames or not code.co_filename.startswith(_RUNTIME):
            frames.append((code.co_filename, tb.tb_lineno or 0, code.co_name))
        tb = tb.tb_next
    return frames[-MAX_FRAMES:]


#: source_name() -> the file name shown for it (:func:`remember_source`)
_SOURCES: dict[str, str] = {}

_SOURCE_NAME = re.compile(r"<source [0-9a-f]{16}> (.*)")


def source_name(file: str, digest: str) -> str:
    """The name source text of content ``digest`` given as ``file`` is compiled under:
    its code's file name, unique to the text and the name (two clients may register
    different files of one name), never a path of the worker.

    >>> source_name("boom.py", "81" * 32)
    '<source 8181818181818181> boom.py'
    """
    return f"<source {digest[:16]}> {file}"


def remember_source(compiled_as: str, text: str) -> None:
    """Keep ``text``, compiled under ``compiled_as`` (:func:`source_name`), for tracebacks
    (their source lines) and :func:`inspect.getsource`; its frames are shown under the file
    name the client gave.

    >>> remember_source(source_name("job.py", "ab" * 32), "y = 1 / 0")
    >>> print(format_traceback([(source_name("job.py", "ab" * 32), 1, "<module>")],
    ...                        "ZeroDivisionError", "division by zero"))
    Traceback (most recent call last):
      File "job.py", line 1, in <module>
        y = 1 / 0
    ZeroDivisionError: division by zero
    """
    match = _SOURCE_NAME.fullmatch(compiled_as)
    shown = match.group(1) if match else compiled_as
    # no modification time: linecache.checkcache never drops it for a missing file
    linecache.cache[compiled_as] = (len(text), None, text.splitlines(True), compiled_as)
    _SOURCES[compiled_as] = shown


def format_traceback(frames: Sequence[Frame], type_name: str, message: str) -> str:
    """``frames`` and the exception as Python prints them, with the source line of each
    frame whose file is a module this process has loaded or a source it was given."""
    if not frames:
        return ""
    known = _loaded_files()
    lines = ["Traceback (most recent call last):"]
    for filename, lineno, name in frames:
        match = _SOURCE_NAME.fullmatch(filename)
        shown = _SOURCES.get(filename) or (match.group(1) if match else filename)
        lines.append(f'  File "{shown}", line {lineno}, in {name}')
        if filename in known or filename in _SOURCES:
            source = linecache.getline(filename, lineno).strip()
            if source:
                lines.append(f"    {source}")
    lines.append(f"{type_name}: {message}" if message else type_name)
    return "\n".join(lines)


_FRAME = re.compile(r'  File "(.*)", line (\d+), in .*')


def with_sources(traceback: str) -> str:
    """``traceback`` (as :func:`format_traceback` writes it) with a source line added under
    each frame that has none and whose file is a module this process has loaded: an error
    formatted where the user's files were not loaded gets its lines where they are.

    >>> import doctest
    >>> frames = ["Traceback (most recent call last):",
    ...           f'  File "{doctest.__file__}", line 1, in m', "E: e"]
    >>> print(with_sources(chr(10).join(frames)).splitlines()[2])
        # Module doctest.
    """
    lines = traceback.splitlines()
    if not lines:
        return traceback
    known = _loaded_files()
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        frame = _FRAME.fullmatch(line)
        has_source = i + 1 < len(lines) and lines[i + 1].startswith("    ")
        if frame is not None and not has_source and frame.group(1) in known:
            source = linecache.getline(frame.group(1), int(frame.group(2))).strip()
            if source:
                out.append(f"    {source}")
    return "\n".join(out)


def _loaded_files() -> set[str]:
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files.add(path)
    return files
