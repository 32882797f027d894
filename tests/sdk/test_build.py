"""``dandelion build``: C source to a static freestanding ELF the process engine can map."""

from __future__ import annotations

import shutil
import struct

import pytest

from dandelion.cli import main
from dandelion.errors import BackendError
from dandelion.runtime.native import NATIVE_BASE, validate_elf
from dandelion.sdk import build, include_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def test_header_ships_with_the_package():
    assert (include_dir() / "dandelion.h").is_file()


def test_build_gives_a_static_x86_64_executable_at_the_native_base(tmp_path):
    src = tmp_path / "noop.c"
    src.write_text("#include <dandelion.h>\nint dandelion_main(void) { return 0; }\n")
    fn = build([src], tmp_path / "noop.elf")
    e_type, e_machine = struct.unpack_from("<HH", fn.image, 16)
    assert (e_type, e_machine) == (2, 62)
    image = validate_elf("noop", fn.image)
    assert all(NATIVE_BASE <= s[0] for s in image.segments)


def test_compile_errors_come_back_with_the_compilers_message(tmp_path):
    src = tmp_path / "broken.c"
    src.write_text("int dandelion_main(void) { return nope; }\n")
    with pytest.raises(BackendError, match="nope"):
        build([src], tmp_path / "broken.elf")


def test_libc_calls_do_not_link(tmp_path):
    src = tmp_path / "libc.c"
    src.write_text("#include <dandelion.h>\nint puts(const char*);\n"
                   "int dandelion_main(void) { return puts(\"hi\"); }\n")
    with pytest.raises(BackendError, match="puts"):
        build([src], tmp_path / "libc.elf")


def test_cli_build_writes_the_elf(tmp_path, capsys):
    src = tmp_path / "f.c"
    src.write_text("#include <dandelion.h>\nint dandelion_main(void) { return 0; }\n")
    assert main(["build", str(src), "-o", str(tmp_path / "f.elf")]) == 0
    assert (tmp_path / "f.elf").read_bytes()[:4] == b"\x7fELF"
    assert "native function" in capsys.readouterr().out
