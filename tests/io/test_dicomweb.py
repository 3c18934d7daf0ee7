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
import http.server
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import tempfile
import threading
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
from ctflow.io.dicom.seg import read_dicom_seg, write_dicom_seg
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.io.dicomweb import (
    read_dicomweb_series,
    retrieve_series,
    series_source,
    store_dicomweb,
    stow,
)
from ctflow.io.dicomweb import server as srv
from ctflow.io.dicomweb.wado import _split_multipart
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


def _json_answer(results: list[dict], warning: str = "") -> srv._Answer:
    body = bytearray(json.dumps(results).encode())
    return srv._Answer(body, "application/dicom+json", 200, warning)


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

    monkeypatch.setattr(dicomweb.qido, "_get", fake_get)  # as QIDO-RS calls it
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
    assert srv._SERVERS[server.url].headers == (("X-Ctflow-Test", "1"),)
    assert ds.create_batch([server.good]).load()[0].images.shape == (8, 24, 20)
    # a process that did not list the server (a Dask worker) gets them with its batches
    srv._SERVERS.pop(server.url)
    part = ds.split(0.5, seed=0)[0] if len(ds) > 1 else ds
    part.create_batch(part.ids[:1])
    assert srv._SERVERS[server.url].headers == (("X-Ctflow-Test", "1"),)
    # a time-out set for the server is kept when from_dicomweb is not given one
    dicomweb.set_server_options(server.url, timeout=12.5)
    cf.Dataset.from_dicomweb(server.url, [STUDY])
    assert srv._SERVERS[server.url].timeout == 12.5


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
    _, study, series = srv._split_source(ds.sources[REAL_SERIES], "test")
    url = f"{server.url}/studies/{study}/series/{series}"
    answer = srv._get(url, srv._WADO_ACCEPT, srv._Options(), "series", 2**30)
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
    assert srv._split_source(source, "t") == (
        "https://pacs.example/dicomweb",
        "1.2",
        "1.2.3",
    )
    with pytest.raises(InvalidParameterError, match="do not apply to a DICOMweb series"):
        read_scan(source, series_uid="1.2.3")
    with pytest.raises(InvalidParameterError, match="must start with dicomweb"):
        read_scan(os.fspath(tmp_path), fmt="dicomweb")


# ---------------------------------------------------------------------------- STOW-RS

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _rest(server: Server) -> str:
    return server.url.removesuffix("/dicom-web")  # Orthanc's own REST API


def _orthanc_file(server: Server, sop_uid: str) -> bytes | None:
    """The file Orthanc stores for an instance, asked through its REST API (not DICOMweb)."""
    lookup = urllib.request.Request(
        f"{_rest(server)}/tools/lookup", data=sop_uid.encode(), method="POST"
    )
    with urllib.request.urlopen(lookup, timeout=30) as answer:
        found = [r for r in json.loads(answer.read()) if r["Type"] == "Instance"]
    if not found:
        return None
    with urllib.request.urlopen(f"{_rest(server)}/instances/{found[0]['ID']}/file") as answer:
        return answer.read()


def _n_instances(server: Server) -> int:
    with urllib.request.urlopen(f"{_rest(server)}/statistics", timeout=30) as answer:
        return int(json.loads(answer.read())["CountInstances"])


def _qido_series(server: Server, study: str, modality: str) -> list[tuple[str, str]]:
    """(SeriesInstanceUID, Modality) of a study's series, by a plain QIDO-RS request."""
    request = urllib.request.Request(
        f"{server.url}/studies/{study}/series?Modality={modality}",
        headers={"Accept": "application/dicom+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        listed = json.loads(answer.read() or b"[]")
    return [(s["0020000E"]["Value"][0], s["00080060"]["Value"][0]) for s in listed]


def _seg_labels() -> np.ndarray:
    labels = np.zeros((8, 24, 20), np.uint8)  # the grid of the good series
    labels[2:6, 5:15, 4:12] = 1
    labels[3, 18:22, 1:4] = 7
    return labels


def _ct_files(folder: Path, study: str, description: str, n: int = 3) -> list[Path]:
    rng = np.random.default_rng(len(description))
    vol = rng.integers(-1024, 1500, size=(n, 6, 5)).astype(np.int16)
    uid = generate_uid(entropy_srcs=["ctflow-dicomweb-test", description])
    return write_dicom_series(
        folder, vol, GEOMETRY, series_uid=uid, study_uid=study, description=description
    )


def test_a_seg_stored_by_stow_rs_is_on_the_server(server, tmp_path):
    labels = _seg_labels()
    series = server.folders[server.good]
    seg = write_dicom_seg(tmp_path / "seg.dcm", labels, series, ["organ", "lesion"])
    header = pydicom.dcmread(seg, stop_before_pixels=True)
    stored = store_dicomweb(server.url, [seg], study_uid=STUDY)
    assert [s.sop_instance_uid for s in stored] == [header.SOPInstanceUID]
    one = stored[0]
    assert (one.study_uid, one.series_uid) == (STUDY, header.SeriesInstanceUID)
    assert one.sop_class_uid == SEG_STORAGE and one.warning == "" and one.file == str(seg)
    assert one.url == (
        f"{server.url}/studies/{STUDY}/series/{header.SeriesInstanceUID}/instances/"
        f"{header.SOPInstanceUID}"
    )
    # independently: QIDO-RS lists a SEG series in the study, Orthanc's REST API has the file
    assert _qido_series(server, STUDY, "SEG") == [(header.SeriesInstanceUID, "SEG")]
    on_server = _orthanc_file(server, header.SOPInstanceUID)
    assert on_server is not None
    assert hashlib.sha256(on_server).digest() == hashlib.sha256(seg.read_bytes()).digest()
    (tmp_path / "from_orthanc.dcm").write_bytes(on_server)
    back = read_dicom_seg(tmp_path / "from_orthanc.dcm", reference=series)
    np.testing.assert_array_equal(back.labels, labels)
    assert back.names == ("organ", "lesion") and back.info["referenced_series_uid"] == server.good
    # ctflow's own QIDO-RS and WADO-RS see the same
    segs = dicomweb.list_series(server.url, STUDY, modality="seg")
    assert [(s["SeriesInstanceUID"], s["Modality"]) for s in segs] == [
        (header.SeriesInstanceUID, "SEG")
    ]
    assert {s["SeriesInstanceUID"] for s in dicomweb.list_series(server.url, STUDY)} == {
        server.good,
        server.gap,
    }  # CT by default: the SEG is not a CT series
    source = series_source(server.url, STUDY, header.SeriesInstanceUID)
    files = retrieve_series(source, tmp_path / "retrieved")
    assert [f.name for f in files] == ["part-00001.dcm"]
    assert files[0].read_bytes() == seg.read_bytes()
    np.testing.assert_array_equal(read_dicom_seg(files[0], reference=series).labels, labels)


def test_files_given_as_bytes_round_trip_through_the_server(server, tmp_path):
    study = generate_uid(entropy_srcs=["ctflow-dicomweb-test", "bytes study"])
    files = _ct_files(tmp_path / "local", study, "sent as bytes", n=4)
    before = _n_instances(server)
    stored = store_dicomweb(server.url, [f.read_bytes() for f in files], timeout=30)
    names = [f"files[{k}] ({f.stat().st_size} bytes)" for k, f in enumerate(files)]
    assert [s.file for s in stored] == names
    assert [s.sop_instance_uid for s in stored] == [
        str(pydicom.dcmread(f).SOPInstanceUID) for f in files
    ]
    assert _n_instances(server) == before + 4
    for path, one in zip(files, stored, strict=True):
        assert _orthanc_file(server, one.sop_instance_uid) == path.read_bytes()
    # and what WADO-RS gives back reads as the local folder does
    remote = read_scan(series_source(server.url, study, stored[0].series_uid))
    _assert_same_scan(remote, read_scan(tmp_path / "local"))


def test_a_refused_store_names_the_instances_and_the_reasons(server, tmp_path):
    study = generate_uid(entropy_srcs=["ctflow-dicomweb-test", "refused study"])
    other = generate_uid(entropy_srcs=["ctflow-dicomweb-test", "other study"])
    mine = _ct_files(tmp_path / "mine", study, "mine", n=1)[0]
    theirs = _ct_files(tmp_path / "theirs", other, "theirs", n=1)[0]
    uid_mine = str(pydicom.dcmread(mine).SOPInstanceUID)
    uid_theirs = str(pydicom.dcmread(theirs).SOPInstanceUID)
    secret = {"Authorization": "Bearer s3cret-token"}
    # all refused: an instance of another study than the URL's
    with pytest.raises(dicomweb.StoreError) as info:
        store_dicomweb(server.url, theirs, study_uid=study, headers=secret)
    error = info.value
    assert isinstance(error, CorruptFileError)
    message = str(error)
    assert message.startswith(f"{server.url}/studies/{study}: HTTP 409")
    assert f"{uid_theirs} ({theirs}): 0x0110 processing failure" in message
    assert f"its StudyInstanceUID {other} is not the study of the URL" in message
    assert "s3cret" not in message and "Bearer" not in message
    assert (error.status, error.stored) == (409, [])
    assert error.failed == {uid_theirs: "0x0110 processing failure"}
    assert _orthanc_file(server, uid_theirs) is None  # not stored
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.status, again.failed) == (message, 409, error.failed)
    # partly refused: what was stored is said too
    with pytest.raises(dicomweb.StoreError, match="stored 1 of 2 instance") as info:
        store_dicomweb(server.url, [mine, theirs], study_uid=study)
    assert [s.sop_instance_uid for s in info.value.stored] == [uid_mine]
    assert list(info.value.failed) == [uid_theirs]
    assert _orthanc_file(server, uid_mine) == mine.read_bytes()
    assert _orthanc_file(server, uid_theirs) is None


def test_a_url_without_stow_rs_is_a_typed_error(server, tmp_path):
    seg = _ct_files(tmp_path, "1.2.3.4.5.6", "nowhere", n=1)
    with pytest.raises(dicomweb.StoreError, match=r"HTTP 405 .*no STOW-RS service") as info:
        store_dicomweb(_rest(server), seg)  # Orthanc's REST API, not its DICOMweb root
    assert str(info.value).startswith(f"{_rest(server)}/studies: ")
    with pytest.raises(dicomweb.StoreError, match=r"HTTP 404 Not Found: no STOW-RS service"):
        store_dicomweb(server.url + "/not-here", seg)
    url = f"http://127.0.0.1:{_free_port()}/dicom-web"  # nothing listens there
    with pytest.raises(CorruptFileError, match=re.escape(f"{url}/studies: cannot reach")):
        store_dicomweb(url, seg, timeout=5)


def test_a_redirected_store_is_not_sent_on(tmp_path):
    """A POST is never re-sent to where a server redirects it (the body would go elsewhere)."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", "/elsewhere/studies")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    seg = _ct_files(tmp_path, "1.2.3.4.5.7", "redirected", n=1)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
            with pytest.raises(CorruptFileError, match="not send DICOM instances on to a redirect"):
                store_dicomweb(url, seg, timeout=10)
        finally:
            httpd.shutdown()


def test_bad_files_are_refused_before_anything_is_sent(server, tmp_path):
    before = _n_instances(server)
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM " * 20)
    good = _ct_files(tmp_path / "good", "1.2.3.4.5.8", "never sent", n=1)[0]
    with pytest.raises(UnsupportedFormatError, match=re.escape(f"{text} is not a DICOM file")):
        store_dicomweb(server.url, [good, text])
    with pytest.raises(UnsupportedFormatError, match=r"files\[1\] \(7 bytes\) is not a DICOM"):
        store_dicomweb(server.url, [good, b"garbage"])
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:300])  # the file meta and little more
    with pytest.raises(InvalidScanError, match=r"truncated\.dcm has no StudyInstanceUID"):
        store_dicomweb(server.url, truncated)
    no_uid = pydicom.dcmread(good)
    del no_uid.SeriesInstanceUID
    no_uid.save_as(tmp_path / "no_uid.dcm")
    with pytest.raises(InvalidScanError, match=r"no_uid\.dcm has no SeriesInstanceUID"):
        store_dicomweb(server.url, tmp_path / "no_uid.dcm")
    with pytest.raises(CorruptFileError, match=r"missing\.dcm: no such file"):
        store_dicomweb(server.url, [tmp_path / "missing.dcm"])
    with pytest.raises(InvalidParameterError, match="is a folder; pass its DICOM files"):
        store_dicomweb(server.url, tmp_path / "good")
    with pytest.raises(InvalidParameterError, match="are the same instance"):
        store_dicomweb(server.url, [good, good.read_bytes()])
    assert _n_instances(server) == before  # nothing reached the server


def test_a_file_that_changes_while_it_is_sent_breaks_the_request_off(server, tmp_path):
    files = _ct_files(tmp_path / "changing", "1.2.3.4.5.9", "changing", n=2)
    before = _n_instances(server)
    for change in (lambda b: b[:-10], lambda b: b + b"\x00" * 10):  # shrinks, grows
        checked = stow._outgoing(files, "store_dicomweb")  # as store_dicomweb checks them
        files[1].write_bytes(change(files[1].read_bytes()))
        body = stow._Body(checked, "b0UNDARY")
        options = srv._Options((), 10.0)
        request = stow._store_request(f"{server.url}/studies", body, options)
        with pytest.raises(CorruptFileError, match="changed while it was sent") as info:
            srv._send(request, options, "study", 2**20, keep_errors=True)
        assert str(info.value).startswith(f"store_dicomweb: {files[1]} changed")
        body.close()
    time.sleep(0.5)  # what the server would have made of a broken-off request
    assert _n_instances(server) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://127.0.0.1/dicom-web"}, "http:// or https://"),
        ({"url": "http://user:pw@127.0.0.1/dicom-web"}, "credentials in the URL"),
        ({"files": []}, "files is empty"),
        ({"files": 3}, "files must be a path, the bytes of a DICOM file"),
        ({"files": {"a": "b"}}, "files must be a path"),
        ({"files": [None]}, r"files\[0\] must be a path or the bytes"),
        ({"study_uid": "1.2/../3"}, "study_uid must be a DICOM UID"),
        ({"timeout": 0}, "timeout must be"),
        ({"headers": {"Authorization": "Bearer x\r\nEvil: 1"}}, "'Authorization' must be one line"),
        ({"headers": ["Authorization"]}, "headers must be a mapping"),
    ],
)  # fmt: skip
def test_bad_store_parameters_name_the_function_and_the_parameter(kwargs, match, tmp_path):
    args = {"url": "http://127.0.0.1:9/dicom-web", "files": b"x"} | kwargs
    with pytest.raises(InvalidParameterError, match=match) as info:
        store_dicomweb(args.pop("url"), args.pop("files"), **args)
    assert str(info.value).startswith("store_dicomweb: ")
    assert "Bearer" not in str(info.value)


def test_retrieve_series_wants_an_empty_folder(server, tmp_path):
    source = series_source(server.url, STUDY, server.good)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "other.dcm").write_bytes(b"x")
    with pytest.raises(InvalidParameterError, match="is not empty"):
        retrieve_series(source, tmp_path / "busy")
    with pytest.raises(InvalidParameterError, match="is a file, not a folder"):
        retrieve_series(source, tmp_path / "busy" / "other.dcm")
    with pytest.raises(CorruptFileError, match="HTTP 404"):
        retrieve_series(series_source(server.url, STUDY, "1.2.3.999"), tmp_path / "none")
    assert list((tmp_path / "none").iterdir()) == []
    files = retrieve_series(source, tmp_path / "good")
    _assert_same_scan(read_scan(tmp_path / "good"), read_scan(server.folders[server.good]))
    assert len(files) == 8 and all(f.parent == tmp_path / "good" for f in files)
    with pytest.raises(InvalidParameterError, match="modality must be a DICOM Modality"):
        dicomweb.list_series(server.url, STUDY, modality="C T")


def _outgoing(uid: str) -> stow._Outgoing:
    return stow._Outgoing(f"{uid}.dcm", b"", 0, uid, SEG_STORAGE, "1.2", "1.2.3")


def test_store_answers_are_read_as_ps3_18_says():
    """Warnings, a RetrieveURI, an answer in a list, a FailureReason as text, a silent server."""
    sent = [_outgoing(u) for u in ("1.1", "1.2", "1.3", "1.4")]
    item = {
        "00081155": {"vr": "UI", "Value": ["1.1"]},
        "00081190": {"vr": "UR", "Value": ["http://pacs/i/1.1"]},
        "00081196": {"vr": "US", "Value": [0xB000]},
    }
    older = {
        "00081155": {"vr": "UI", "Value": ["1.2"]},
        "0040E010": {"vr": "UR", "Value": ["http://pacs/i/1.2"]},
    }
    refused = {
        "00081155": {"vr": "UI", "Value": ["1.3"]},
        "00081197": {"vr": "US", "Value": ["0xA701"]},
    }
    response = [{"00081199": {"vr": "SQ", "Value": [item, older]},
                 "00081198": {"vr": "SQ", "Value": [refused]}}]  # fmt: skip
    answer = srv._Answer(bytearray(json.dumps(response).encode()), "", 202, "", "Accepted")
    parsed = stow._store_response(answer)
    assert parsed is not None
    stored, failed = stow._sort_answer(parsed, sent)
    assert [(s.sop_instance_uid, s.url, s.warning) for s in stored] == [
        ("1.1", "http://pacs/i/1.1", "0xB000 coercion of data elements"),
        ("1.2", "http://pacs/i/1.2", ""),
    ]
    assert failed == {"1.3": "0xA701 out of resources", "1.4": "not in the server's answer"}
    error = stow._refusal("http://pacs/studies", answer, sent, stored, failed, None)
    assert str(error).startswith("http://pacs/studies: HTTP 202 Accepted: the server stored 2 of 4")
    assert "1.4 (1.4.dcm): not in the server's answer" in str(error)
    for body in (b"", b"<html>", b'{"HttpError": "Not Found"}', b"[]"):
        assert stow._store_response(srv._Answer(bytearray(body), "", 200, "")) is None
    assert stow._reason(0x0122) == "0x0122 SOP class not supported"
    assert stow._reason("272") == "0x0110 processing failure"
    assert stow._reason(0x1234) == "0x1234 no meaning known"
