"""What the data server adds for the browser client, over real HTTP on loopback: ``/config.json``
(the client's configuration, e.g. the master's URL) and ``POST /projects/P/images`` (one labelled
image, the browser's "teach"), validated and converted like an image in an upload archive."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trio
from helpers.dataserver import SHAPE_QUERY, dataset, open_server, png
from PIL import Image

from mlitb.dataserver import InputShape, UploadLimits, decode_archive, decode_image
from mlitb.errors import UploadError

GRAY8 = InputShape(width=8, height=8, channels=1)


@pytest.mark.trio
async def test_config_json_is_served_when_given(tmp_path: Path) -> None:
    with trio.fail_after(30):
        config = {"master_url": "ws://lab-pc:8000"}
        async with open_server(tmp_path / "a", client_config=config) as server:
            status, body, headers = await server.request("GET", "/config.json")
            assert (status, body) == (200, config)
            assert headers["content-type"].startswith("application/json")
            status, body, _ = await server.request("GET", "/")  # the page is still there
            assert status == 200 and b"mlitb" in body
            config["master_url"] = "ws://lab-pc:9000"  # read at each request
            assert (await server.request("GET", "/config.json"))[1] == config
        async with open_server(tmp_path / "b") as server:
            status, body, _ = await server.request("GET", "/config.json")
            assert status == 404 and "no client configuration" in body["error"]


@pytest.mark.trio
async def test_one_image_is_stored_and_registered_like_an_upload(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_server(tmp_path) as server:
            status, body = await server.upload("p", dataset(tmp_path / "d.zip", ["cat", "dog"]))
            assert status == 201
            data = png(20)
            status, body, _ = await server.request(
                "POST", "/projects/p/images?label=bird&name=b.png", data,
                {"Content-Type": "image/png"})
            assert status == 201, body
            assert body == {"project": "p", "split": "train", "ids": [2, 2], "count": 1,
                            "labels": ["cat", "dog", "bird"], "counts": {"bird": 1}}
            registration = server.registered[-1]
            assert (registration.ids, registration.label_names) == (range(2, 3),
                                                                    ("cat", "dog", "bird"))
            assert registration.labels.tolist() == [2]
            images, labels = server.store.get("p", [2])
            # The same conversion (resize rule, RGB) as the same file inside a zip.
            with zipfile.ZipFile(tmp_path / "one.zip", "w") as z:
                z.writestr("bird/b.png", data)
            zipped = decode_archive(tmp_path / "one.zip", InputShape(width=8, height=8, channels=3))
            np.testing.assert_array_equal(images[0], zipped.images[0])
            assert labels.tolist() == [2]
            manifest = server.store.manifest("p")
            assert manifest["sha256"][2] == hashlib.sha256(data).hexdigest()
            # An existing label, into the test split.
            status, body, _ = await server.request(
                "POST", "/projects/p/images?label=cat&split=test", png(8))
            assert status == 201 and body["labels"] == ["cat", "dog", "bird"]
            assert server.registered[-1].split == "test"


@pytest.mark.trio
async def test_bad_images_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    with trio.fail_after(30):
        limits = UploadLimits(max_file_bytes=4000, max_image_pixels=100 * 100)
        async with open_server(tmp_path, limits=limits, upload_token="t") as server:
            auth = {"Authorization": "Bearer t"}
            status, _ = await server.upload("p", dataset(tmp_path / "d.zip", ["a"]),
                                            headers=auth)
            assert status == 201
            big = io.BytesIO()
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), np.uint8)
                            ).save(big, "BMP")
            huge = io.BytesIO()
            Image.new("L", (400, 400)).save(huge, "PNG")  # small file, too many pixels
            cases = [
                ("label=x", b"not an image", auth, 400, "is not an image"),
                ("label=x", b"", auth, 400, "the body is empty"),
                ("label=x", big.getvalue(), auth, 413, "over the limit of 4000"),
                ("label=x", huge.getvalue(), auth, 400, "pixels, over the limit"),
                ("label=", png(), auth, 400, "label must be"),
                ("label=" + "x" * 65, png(), auth, 400, "label must be"),
                ("label=a%0Ab", png(), auth, 400, "label must be"),
                ("label=x&split=dev", png(), auth, 400, "split must be"),
                ("label=x", png(), {"Authorization": ""}, 401, "token was missing"),
                ("label=x&width=9", png(), auth, 409, "takes 8x8x3"),
            ]
            for query, data, headers, expected, message in cases:
                status, body, _ = await server.request(
                    "POST", f"/projects/p/images?{query}", data, headers)
                assert (status, message in body["error"]) == (expected, True), (query, body)
            status, body, _ = await server.request(
                "POST", "/projects/new/images?label=x", png(), auth)
            assert status == 400 and "width, height and channels" in body["error"]
            status, body, _ = await server.request(
                "POST", f"/projects/new/images?label=x&{SHAPE_QUERY}", png(), auth)
            assert status == 201 and body["ids"] == [0, 0]
            assert len(server.store.ids("p")) == 1 and len(server.registered) == 2


def test_decode_image_converts_like_the_archive_path() -> None:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), np.uint8)).save(buffer, "PNG")
    decoded = decode_image(buffer.getvalue(), "cat", GRAY8, name="cat.png")
    assert decoded.images.shape == (1, 1, 8, 8) and decoded.label_names == ("cat",)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L").resize(
        (8, 8), Image.Resampling.BILINEAR, box=(10, 0, 40, 30)))
    np.testing.assert_array_equal(decoded.images[0, 0], expected)
    with pytest.raises(UploadError, match="'x.gif': is not an image"):
        decode_image(b"GIF89a garbage", "cat", GRAY8, name="x.gif")
