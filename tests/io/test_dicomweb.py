"""DICOMweb sources against a real Orthanc server with its DICOMweb plugin.

A module fixture starts ``Orthanc`` on loopback (a free HTTP port, no DICOM server, storage in a
temporary folder, its own config: a system service of the Debian package, if any, is never
used), uploads a small synthetic study (a good CT series, a CT series with a missing slice, an
MR series) and, when the real-data folder is there, the real 20-slice JPEG 2000 CT series; then
``Dataset.from_dicomweb`` lists them by QIDO-RS and ``load()`` reads them by WADO-RS. The tests
that need a server skip only when the ``Orthanc`` binary is absent (``apt-get install orthanc
orthanc-dicomweb``; ``.ci/run`` installs both). The multipart parser is also tested on its own.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import ctflow as cf
from ctflow.errors import (
    CorruptFileError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry
from ctflow.io import dicomweb
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.io.dicomweb import _split_multipart, read_dicomweb_series, series_source
from ctflow.io.reader import detect_format, read_scan
from ctflow.io.scan import Scan
from ctflow.io.store import read_item

pytestmark = pytest.mark.timeout(180)

ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/*/orthanc/plugins/libOrthancDicomWeb.so*",
)
STUDY = generate_uid(entropy_srcs=["ctflow-dicomweb-test", "study"])
REAL_STUDY = generate_uid(entropy_srcs=["ctflow-dicomweb-test", "real study"])
REAL_SERIES = generate_uid(entropy_srcs=["ctflow-dicomweb-test", "real series"])
GEOMETRY = Geometry((2.5, 0.8, 0.7), (-40.0, 12.5, 30.25))


@dataclass
class Server:
    """A running Orthanc and what was uploaded to it."""

    url: str  # the DICOMweb root
    good: str  # SeriesInstanceUIDs
    gap: str
    mr: str
    folders: dict[str, Path]  # series UID -> the local folder of the same files
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plugin() -> str:
    found = [p for pattern in PLUGIN_GLOBS for p in sorted(glob.glob(pattern))]
    if not found:
        pytest.fail(
            "Orthanc is installed but its DICOMweb plugin (libOrthancDicomWeb.so) is not: "
            "apt-get install orthanc-dicomweb"
        )
    return found[0]


def _upload(root: str, files: list[Path]) -> None:
    for path in files:
        request = urllib.request.Request(f"{root}/instances", data=path.read_bytes(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200, path


def _wait_until_up(root: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{root}/system", timeout=2) as answer:
                if answer.status == 200 and json.loads(answer.read()).get("Version"):
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"Orthanc did not answer {root}/system within 60 s: {log.read_text()[-3000:]}")


def _series(folder: Path, seed: int, description: str, **kw) -> tuple[str, list[Path]]:
    rng = np.random.default_rng(seed)
    vol = rng.integers(-1024, 1500, size=(8, 24, 20)).astype(np.int16)
    uid = generate_uid(entropy_srcs=["ctflow-dicomweb-test", description])
    files = write_dicom_series(
        folder, vol, GEOMETRY, series_uid=uid, study_uid=STUDY, description=description, **kw
    )
    return uid, files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Orthanc with its DICOMweb plugin on a free loopback port, with a synthetic study."""
    if ORTHANC is None:
        pytest.skip("the Orthanc binary is absent (apt-get install orthanc orthanc-dicomweb)")
    work = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {
        "Name": "ctflow-test",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "storage"),
        "Plugins": [_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "AuthenticationEnabled": False,
        "RemoteAccessAllowed": False,
        "HttpTimeout": 30,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = work / "orthanc.log"
    root = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ORTHANC, str(work / "orthanc.json")],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_until_up(root, process, log)
        data = tmp_path_factory.mktemp("series")
        good, good_files = _series(data / "good", 1, "good")
        gap, gap_files = _series(data / "gap", 2, "gap", skip=[3])
        mr, mr_files = _series(data / "mr", 3, "mr")
        for path in mr_files:
            ds = pydicom.dcmread(path)
            ds.Modality = "MR"
            ds.save_as(path)
        _upload(root, good_files + gap_files + mr_files)
        yield Server(
            f"{root}/dicom-web",
            good,
            gap,
            mr,
            {good: data / "good", gap: data / "gap", mr: data / "mr"},
            log,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def real_series(server: Server, real_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real JPEG 2000 series uploaded (it has no UIDs: deterministic ones are added)."""
    original = real_data / "totalsegmentator_examples" / "example_ct_dicom"
    if not original.is_dir():
        pytest.skip(f"{original} is absent")
    patched = tmp_path_factory.mktemp("real_with_uids")
    files = []
    for path in sorted(original.iterdir()):
        ds = pydicom.dcmread(path)
        sop = generate_uid(entropy_srcs=["ctflow-dicomweb-test", path.name])
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
            REAL_STUDY,
            REAL_SERIES,
            sop,
        )
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.save_as(patched / path.name)
        files.append(patched / path.name)
    _upload(server.url.removesuffix("/dicom-web"), files)
    return original, patched


def _assert_same_scan(a: Scan, b: Scan) -> None:
    assert a.images.dtype == b.images.dtype and a.images.shape == b.images.shape
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.geometry.spacing, b.geometry.spacing)
    np.testing.assert_array_equal(a.geometry.origin, b.geometry.origin)
    np.testing.assert_array_equal(a.geometry.direction, b.geometry.direction)
    assert a.geometry == b.geometry


# ---------------------------------------------------------------------------- listing


def test_lists_the_ct_series_of_a_study(server):
    ds = cf.Dataset.from_dicomweb(server.url, study_uids=[STUDY])
    assert sorted(ds.ids) == sorted([server.good, server.gap])  # MR is not listed
    for uid in ds.ids:
        assert ds.sources[uid] == series_source(server.url, STUDY, uid)
        assert ds.sources[uid].startswith("dicomweb+http://127.0.0.1:")
        assert detect_format(ds.sources[uid]) == "dicomweb"
    assert sorted(cf.Dataset.from_dicomweb(server.url, STUDY).ids) == sorted(ds.ids)


def test_lists_every_study(server):
    ds = cf.Dataset.from_dicomweb(server.url)
    assert {server.good, server.gap} <= set(ds.ids) and server.mr not in ds.ids
    assert all(ds.sources[uid].endswith(f"/series/{uid}") for uid in ds.ids)


def _json_answer(results: list[dict], warning: str = "") -> dicomweb._Answer:
    body = bytearray(json.dumps(results).encode())
    return dicomweb._Answer(body, "application/dicom+json", 200, warning)


def test_a_server_that_caps_its_answers_is_asked_for_the_rest(monkeypatch):
    """A QIDO-RS answer with a Warning "additional results" header is followed by ``offset``."""
    asked: list[str] = []
    capped = '299 pacs: "There are additional results that can be requested"'

    def fake_get(url, accept, options, what, limit):
        asked.append(url)
        if url.endswith("/studies"):
            return _json_answer([{"0020000D": {"vr": "UI", "Value": ["1.1"]}}], capped)
        if url.endswith("/studies?offset=1"):
            return _json_answer([{"0020000D": {"vr": "UI", "Value": ["1.2"]}}])
        study = url.split("/studies/")[1].split("/")[0]
        series = {
            "0020000E": {"vr": "UI", "Value": [study + ".7"]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00201209": {"vr": "IS", "Value": ["12"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        }
        return _json_answer([series])

    monkeypatch.setattr(dicomweb, "_get", fake_get)
    series = dicomweb.list_series("http://pacs/dicom-web")
    assert [s["SeriesInstanceUID"] for s in series] == ["1.1.7", "1.2.7"]
    assert series[0]["NumberOfSeriesRelatedInstances"] == 12  # IS as a number
    assert series[0]["PatientName"] == "Doe^Jane" and series[0]["StudyInstanceUID"] == "1.1"
    assert asked[:2] == ["http://pacs/dicom-web/studies", "http://pacs/dicom-web/studies?offset=1"]
    assert asked[2] == "http://pacs/dicom-web/studies/1.1/series?Modality=CT"


def test_series_filter_gets_the_qido_attributes(server):
    seen: dict[str, dict] = {}

    def keep_good(attributes: dict) -> bool:
        seen[attributes["SeriesInstanceUID"]] = attributes
        return attributes.get("SeriesDescription") == "good"

    ds = cf.Dataset.from_dicomweb(server.url, [STUDY], keep_good, batch_class=cf.CTBatch)
    assert ds.ids == [server.good]
    assert set(seen) == {server.good, server.gap}
    good, gap = seen[server.good], seen[server.gap]
    assert good["Modality"] == "CT" and good["StudyInstanceUID"] == STUDY
    assert good["NumberOfSeriesRelatedInstances"] == 8
    assert gap["NumberOfSeriesRelatedInstances"] == 7  # one slice was not written
    big = cf.Dataset.from_dicomweb(
        server.url, [STUDY], lambda s: s["NumberOfSeriesRelatedInstances"] >= 8
    )
    assert big.ids == [server.good]


def test_bad_filters_and_empty_listings_are_parameter_errors(server):
    with pytest.raises(InvalidParameterError, match="series_filter must return True or False"):
        cf.Dataset.from_dicomweb(server.url, [STUDY], lambda s: None)
    with pytest.raises(InvalidParameterError, match="series_filter must be a callable"):
        cf.Dataset.from_dicomweb(server.url, [STUDY], "good")
    with pytest.raises(InvalidParameterError, match=r"none kept by series_filter"):
        cf.Dataset.from_dicomweb(server.url, [STUDY], lambda s: False)
    with pytest.raises(InvalidParameterError, match=r"no CT series at http://127\.0\.0\.1"):
        cf.Dataset.from_dicomweb(server.url, ["1.2.3.999"])
    with pytest.raises(InvalidParameterError, match="must be a DICOM UID"):
        cf.Dataset.from_dicomweb(server.url, ["1.2/../3"])


def test_bad_urls_and_headers_are_parameter_errors(server):
    with pytest.raises(InvalidParameterError, match="http:// or https://"):
        cf.Dataset.from_dicomweb("ftp://127.0.0.1/dicom-web")
    with pytest.raises(InvalidParameterError, match="credentials in the URL"):
        cf.Dataset.from_dicomweb(server.url.replace("http://", "http://user:secret@"))
    with pytest.raises(InvalidParameterError, match="query or fragment"):
        cf.Dataset.from_dicomweb(server.url + "?x=1")
    with pytest.raises(InvalidParameterError, match="timeout must be"):
        cf.Dataset.from_dicomweb(server.url, timeout=0)
    with pytest.raises(InvalidParameterError, match="'Authorization' must be one line") as info:
        cf.Dataset.from_dicomweb(server.url, headers={"Authorization": "Bearer x\r\nEvil: 1"})
    assert "Bearer" not in str(info.value)  # a header value may be a secret: never shown
    with pytest.raises(InvalidParameterError, match="does not name a series"):
        read_scan(f"dicomweb+{server.url}/studies/{STUDY}")


def test_extra_headers_are_sent_and_kept_for_the_server(server):
    ds = cf.Dataset.from_dicomweb(server.url, [STUDY], headers={"X-Ctflow-Test": "1"})
    assert dicomweb._SERVERS[server.url].headers == (("X-Ctflow-Test", "1"),)
    assert ds.create_batch([server.good]).load()[0].images.shape == (8, 24, 20)


def test_a_url_that_is_not_the_dicomweb_root_is_a_typed_error(server):
    rest_root = server.url.removesuffix("/dicom-web")  # Orthanc's own REST API: a list of ids
    with pytest.raises(CorruptFileError, match=r"/studies: .*JSON list of objects.*a list holding"):
        cf.Dataset.from_dicomweb(rest_root)


# ---------------------------------------------------------------------------- loading


def test_load_equals_the_local_folder(server, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the instances are written
    ds = cf.Dataset.from_dicomweb(server.url, [STUDY])
    batch = ds.create_batch([server.good]).load()
    local = read_scan(server.folders[server.good])
    item = batch[0]
    assert item.images.dtype == local.images.dtype
    np.testing.assert_array_equal(item.images, local.images)
    assert batch.geometry(0) == local.geometry
    assert read_scan(ds.sources[server.good]).info["dicomweb"]["n_instances"] == 8
    scan = read_dicomweb_series(ds.sources[server.good], headers={"X-Test": "1"}, timeout=10)
    _assert_same_scan(scan, local)
    assert scan.source == ds.sources[server.good]
    assert scan.info["n_slices"] == 8 and scan.info["series_uid"] == server.good
    assert scan.info["dicomweb"]["n_instances"] == 8
    assert all(f.startswith(scan.source + "/part-") for f in scan.info["files"])
    assert list(tmp_path.iterdir()) == []  # the private folder is gone
    assert batch.history[0][0]["params"]["source"] == ds.sources[server.good]


def test_real_jpeg2000_series_equals_the_local_folder(server, real_series):
    original, patched = real_series
    ds = cf.Dataset.from_dicomweb(server.url, REAL_STUDY)
    assert ds.ids == [REAL_SERIES]
    batch = ds.create_batch(ds.ids).load()
    local = read_scan(original)
    assert batch[0].images.dtype == local.images.dtype and batch[0].images.shape == (20, 512, 512)
    np.testing.assert_array_equal(batch[0].images, local.images)
    assert batch.geometry(0) == local.geometry
    assert batch.info[0]["transfer_syntaxes"] == local.info["transfer_syntaxes"]  # JPEG 2000
    # WADO-RS with transfer-syntax=* gives back the very bytes that were uploaded
    _, study, series = dicomweb._split_source(ds.sources[REAL_SERIES], "test")
    url = f"{server.url}/studies/{study}/series/{series}"
    answer = dicomweb._get(url, dicomweb._WADO_ACCEPT, dicomweb._Options(), "series", 2**30)
    parts = _split_multipart(answer.body, answer.content_type, url)
    digest = {hashlib.sha256(p).hexdigest() for p in parts}
    assert digest == {hashlib.sha256(f.read_bytes()).hexdigest() for f in patched.iterdir()}


def test_a_pipeline_loads_and_resamples_dicomweb_items(server, tmp_path):
    ds = cf.Dataset.from_dicomweb(server.url, [STUDY], lambda s: s["SeriesDescription"] == "good")
    dst = tmp_path / "dump"
    report = (ds >> cf.Pipeline().load().unify_spacing((2.0, 1.0, 1.0)).dump(dst)).run()
    assert report.done == [server.good] and report.failed == []
    local = cf.Dataset.from_paths({server.good: server.folders[server.good]})
    dst_local = tmp_path / "dump_local"
    (local >> cf.Pipeline().load().unify_spacing((2.0, 1.0, 1.0)).dump(dst_local)).run()
    remote, direct = read_item(dst / server.good), read_item(dst_local / server.good)
    np.testing.assert_array_equal(remote.components["images"], direct.components["images"])
    assert remote.geometry == direct.geometry
    assert remote.geometry.spacing.tolist() == [2.0, 1.0, 1.0]


# ---------------------------------------------------------------------------- errors


def test_a_bad_series_gives_the_error_of_the_local_folder(server, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    source = series_source(server.url, STUDY, server.gap)
    with pytest.raises(InvalidScanError, match="missing slice") as local:
        read_scan(server.folders[server.gap])
    with pytest.raises(InvalidScanError, match="missing slice") as remote:
        read_scan(source)
    message = str(remote.value)
    assert message.startswith(source + ": ") and str(tmp_path) not in message

    def same(text: str, folder: str) -> str:  # the file names differ: slice0004.dcm, part-00002.dcm
        return re.sub(r"(slice|part-)\d+\.dcm", "FILE", text.replace(folder, "X"))

    assert same(message, source) == same(str(local.value), str(server.folders[server.gap]))
    ds = cf.Dataset.from_paths({"gap": source})
    with pytest.raises(InvalidScanError, match="missing slice"):
        ds.create_batch(["gap"]).load()
    resampled = ds.create_batch(["gap"]).load(allow_uneven=True)
    direct = read_scan(server.folders[server.gap], allow_uneven=True)
    np.testing.assert_array_equal(resampled[0].images, direct.images)
    assert resampled.geometry(0) == direct.geometry
    assert any("missing slice" in w for w in resampled.warnings[0])
    assert list(tmp_path.iterdir()) == []  # removed after the failure too


def test_a_non_ct_series_gives_the_error_of_the_local_folder(server):
    source = series_source(server.url, STUDY, server.mr)
    with pytest.raises(InvalidScanError, match=r"not a CT series \(Modality MR\)") as info:
        read_scan(source)
    assert str(info.value).startswith(source)


def test_an_unknown_series_names_the_url_and_the_status(server):
    source = series_source(server.url, STUDY, "1.2.3.4.5.999")
    with pytest.raises(CorruptFileError, match=r"HTTP 404") as info:
        read_scan(source)
    assert f"{server.url}/studies/{STUDY}/series/1.2.3.4.5.999" in str(info.value)
    with pytest.raises(CorruptFileError, match="404"):
        cf.Dataset.from_paths({"x": source}).create_batch(["x"]).load()


def test_a_server_that_is_down_names_the_url():
    url = f"http://127.0.0.1:{_free_port()}/dicom-web"  # nothing listens there
    with pytest.raises(CorruptFileError, match="cannot reach the DICOMweb server") as info:
        cf.Dataset.from_dicomweb(url, timeout=5)
    assert f"{url}/studies" in str(info.value)
    source = series_source(url, "1.2.3", "1.2.3.4")
    with pytest.raises(CorruptFileError, match="cannot reach") as info:
        cf.Dataset.from_paths({"x": source}).create_batch(["x"]).load()
    assert url in str(info.value)


# ---------------------------------------------------------------------------- multipart


def _body(parts: list[bytes], boundary: str = "b0UNDARY", headers: str = "") -> bytes:
    out = b"preamble to be ignored\r\n"
    for part in parts:
        out += f"--{boundary}  \r\n{headers}\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue".encode()


CT = 'multipart/related; type="application/dicom"; boundary="b0UNDARY"'


def test_multipart_parts_are_split_on_the_boundary():
    parts = [b"DICM one", b"", b"\r\n--b0UNDAR not a delimiter\r\n", bytes(range(256))]
    got = _split_multipart(_body(parts), CT, "u")
    assert [bytes(p) for p in got] == parts
    typed = _body([b"x"], headers="Content-Type: application/dicom\r\nContent-Length: 1\r\n")
    assert [bytes(p) for p in _split_multipart(typed, CT, "u")] == [b"x"]
    unquoted = CT.replace('"b0UNDARY"', "b0UNDARY")
    assert [bytes(p) for p in _split_multipart(bytearray(_body([b"y"])), unquoted, "u")] == [b"y"]
    assert _split_multipart(b"--b0UNDARY--\r\n", CT, "u") == []


@pytest.mark.parametrize(
    ("body", "content_type", "error", "match"),
    [
        (_body([b"x"])[:-12], CT, CorruptFileError, "closing delimiter"),
        (b"--b0UNDARY\r\nabc", CT, CorruptFileError, "closing delimiter"),
        (b"no delimiter at all", CT, CorruptFileError, "no delimiter"),
        (b"--b0UNDARYjunk\r\n", CT, CorruptFileError, "malformed multipart delimiter"),
        (_body([b"x"]), "application/dicom+json", UnsupportedFormatError, "not multipart"),
        (_body([b"x"]), "multipart/related; boundary=b0UNDARY; type=image/jpeg",
         UnsupportedFormatError, "image/jpeg"),
        (_body([b"x"]), "multipart/related", CorruptFileError, "no valid boundary"),
        (_body([b"x"], headers="Content-Type: text/html\r\n"), CT, UnsupportedFormatError,
         "part 1 is 'text/html'"),
        (_body([b"xy"], headers="Content-Length: 3\r\n"), CT, CorruptFileError,
         "holds 2 bytes but its Content-Length"),
        (_body([b"x"], headers="broken header\r\n"), CT, CorruptFileError, "malformed header"),
        (_body([b"x"], headers="Content-Transfer-Encoding: base64\r\n"), CT,
         UnsupportedFormatError, "base64"),
    ],
)  # fmt: skip
def test_malformed_multipart_bodies_are_typed_errors(body, content_type, error, match):
    with pytest.raises(error, match=match) as info:
        _split_multipart(body, content_type, "http://pacs/series/1")
    assert str(info.value).startswith("http://pacs/series/1: ")


def test_sources_are_recognised_by_their_text_alone(tmp_path):
    source = "dicomweb+https://pacs.example/dicomweb/studies/1.2/series/1.2.3"
    assert detect_format(source) == "dicomweb"
    assert detect_format("DICOMWEB+HTTP://pacs/studies/1/series/2") == "dicomweb"
    assert dicomweb._split_source(source, "t") == ("https://pacs.example/dicomweb", "1.2", "1.2.3")
    with pytest.raises(InvalidParameterError, match="do not apply to a DICOMweb series"):
        read_scan(source, series_uid="1.2.3")
    with pytest.raises(InvalidParameterError, match="must start with dicomweb"):
        read_scan(os.fspath(tmp_path), fmt="dicomweb")
