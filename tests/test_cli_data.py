"""``mlitb data upload`` against a real master with its embedded data server."""

from __future__ import annotations

import json
import zipfile

import numpy as np
from typer.testing import CliRunner

from mlitb.cli import app
from mlitb.dataserver import write_archive
from mlitb.datasets import DIGITS_SPEC, digits

runner = CliRunner()


def invoke(args, c):
    return runner.invoke(app, [*args, "--master", c.url, "--token", c.token],
                         env={"COLUMNS": "150"})


def digits_zip(path, split, n):
    images = split.images[:n, :, :, 0]
    return write_archive(path, [(str(label), img) for label, img in
                                zip(split.labels[:n], images)])


def test_upload_registers_train_and_test_data(cluster_in_thread, tmp_path):
    c = cluster_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DIGITS_SPEC))
    assert invoke(["project", "create", "digits", "--model", str(spec)], c).exit_code == 0
    train, test, _ = digits()
    result = invoke(["data", "upload", str(digits_zip(tmp_path / "train.zip", train, 300)),
                     "--project", "digits"], c)
    assert result.exit_code == 0, result.output
    assert "stored 300 training images in project digits" in result.output
    result = invoke(["data", "upload", str(digits_zip(tmp_path / "test.zip", test, 50)),
                     "--project", "digits", "--test"], c)
    assert result.exit_code == 0, result.output
    project = c.master.projects["digits"]
    assert project.allocator.total == 300 and len(project.test_ids) == 50
    assert project.net.labels == [str(k) for k in range(10)]
    images, labels = c.store.get("digits", np.arange(3))
    assert images.shape == (3, 1, 8, 8)


def test_bad_uploads_are_refused_and_nothing_is_stored(cluster_in_thread, tmp_path):
    c = cluster_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DIGITS_SPEC))
    assert invoke(["project", "create", "digits", "--model", str(spec)], c).exit_code == 0
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("hello")
    traversal = tmp_path / "evil.zip"
    with zipfile.ZipFile(traversal, "w") as z:
        z.writestr("../cat/1.png", b"x")
    non_image = tmp_path / "text.zip"
    with zipfile.ZipFile(non_image, "w") as z:
        z.writestr("cat/readme.txt", b"not an image")
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    for bad in (not_zip, traversal, non_image, empty):
        result = invoke(["data", "upload", str(bad), "--project", "digits"], c)
        assert result.exit_code == 1, (bad, result.output)
        assert "error:" in result.output and "Traceback" not in result.output
    assert c.master.projects["digits"].allocator.total == 0
    assert "digits" not in c.store.projects() or len(c.store.ids("digits")) == 0
    result = invoke(["data", "upload", str(empty), "--project", "nope"], c)
    assert result.exit_code == 1 and "no project named 'nope'" in result.output


def test_an_upload_abandoned_mid_stream_stores_nothing(cluster_in_thread, tmp_path):
    """What the console's upload dialog does when it is closed during an upload: its progress
    callback raises in the upload's thread, the request is abandoned, nothing is stored."""
    import pytest

    from mlitb.dataserver import DataClient, InputShape

    c = cluster_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DIGITS_SPEC))
    assert invoke(["project", "create", "digits", "--model", str(spec)], c).exit_code == 0
    train, _, _ = digits()
    archive = digits_zip(tmp_path / "train.zip", train, 1000)

    class Stop(Exception):
        pass

    def progress(sent, total):
        if sent > total // 3:
            raise Stop

    with pytest.raises(Stop):
        DataClient(c.data_url, token=c.token).upload("digits", archive,
                                      shape=InputShape(width=8, height=8, channels=1),
                                      progress=progress)
    assert c.master.projects["digits"].allocator.total == 0
    result = invoke(["data", "upload", str(archive), "--project", "digits"], c)
    assert result.exit_code == 0 and "stored 1000 training images" in result.output


def test_a_deleted_projects_data_stays_until_data_delete_removes_it(cluster_in_thread,
                                                                     tmp_path):
    c = cluster_in_thread
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(DIGITS_SPEC))
    assert invoke(["project", "create", "digits", "--model", str(spec)], c).exit_code == 0
    train, _, _ = digits()
    assert invoke(["data", "upload", str(digits_zip(tmp_path / "train.zip", train, 120)),
                   "--project", "digits"], c).exit_code == 0
    # While the project exists its data is not deleted (its workers hold those ids).
    result = invoke(["data", "delete", "-p", "digits", "--yes"], c)
    assert result.exit_code == 1 and "delete it first" in result.output
    assert "digits" in c.store.projects()
    assert invoke(["project", "delete", "digits"], c).exit_code == 0
    assert "digits" in c.store.projects()  # kept: a closure resumed as digits finds it
    # Asked first; "no" deletes nothing.
    result = runner.invoke(app, ["data", "delete", "-p", "digits", "--master", c.url,
                                 "--token", c.token], input="n\n", env={"COLUMNS": "150"})
    assert result.exit_code == 1 and "delete the 120 images" in result.output
    assert "digits" in c.store.projects()
    result = invoke(["data", "delete", "-p", "digits", "--yes"], c)
    assert result.exit_code == 0 and "deleted the 120 images" in result.output, result.output
    assert "digits" not in c.store.projects()
    result = invoke(["data", "delete", "-p", "digits", "--yes"], c)
    assert result.exit_code == 1 and "stores no data" in result.output
