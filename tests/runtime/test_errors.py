import errno

import pytest

from pipeline.runtime.errors import user_errors


def test_a_full_disk_ends_any_command_with_one_named_line_and_no_traceback(capsys):
    with pytest.raises(SystemExit) as info, user_errors("extract", {}):
        raise OSError(errno.ENOSPC, "No space left on device", "data/frames.zarr.tmp-1-ab/v0/frames/c/0")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("extract: no space left on device writing data/frames.zarr.tmp-1-ab/v0/frames/c/0: free space")
    assert "Traceback" not in err


def test_other_os_errors_are_bugs_unless_their_type_has_advice(capsys):
    with pytest.raises(PermissionError), user_errors("extract", {}):
        raise PermissionError(errno.EACCES, "Permission denied", "x")
    with pytest.raises(SystemExit), user_errors("extract", {FileNotFoundError: "run the stage before"}):
        raise FileNotFoundError(errno.ENOENT, "No such file", "data/raw")
    assert "run the stage before" in capsys.readouterr().err


def test_debug_keeps_the_traceback_of_a_full_disk():
    with pytest.raises(OSError), user_errors("extract", {}, debug=True):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_that_names_no_file_names_what_the_command_writes(capsys):
    with pytest.raises(SystemExit), user_errors("extract", {}, writes="data/frames.zarr"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert capsys.readouterr().err.startswith("extract: no space left on device writing data/frames.zarr: free space")
