"""Dataset: item ids mapped to their sources (files or folders), split, and batched.

A dataset holds no voxels: only ids and paths (``dataset >> pipeline`` binds a pipeline to it:
:meth:`ctflow.Pipeline.__rrshift__`). Batches are created on demand
(:meth:`Dataset.create_batch`) as instances of the dataset's ``batch_class``, so a user's
``CTBatch`` subclass with custom actions works in pipelines too.

Examples
--------
>>> ds = Dataset.from_paths({"a": "/data/a.mhd", "b": "/data/b.mhd", "c": "/data/c.mhd"})
>>> ds.ids
['a', 'b', 'c']
>>> train, test = ds.split(0.67, seed=0)
>>> len(train), len(test)
(2, 1)
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.batch import CTBatch
from ctflow.errors import InvalidParameterError
from ctflow.io.remote import is_url
from ctflow.validation import as_item_id, as_path, check_path_text

__all__ = ["Dataset"]

_MULTI_SUFFIXES = (".nii.gz",)


def _stem(path: Path, dirs: bool) -> str:
    """Item id of a path: folder name for directories, file name without its format suffix."""
    if dirs:
        return path.name
    name = path.name
    for suffix in _MULTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _label_files(template: str, sources: Mapping[str, str]) -> dict[str, str]:
    """Every item's label file from a format string on its id; all must exist."""
    if "{id}" not in template:
        raise InvalidParameterError(
            f"from_glob: masks must be a format string on the id, e.g. 'labels/{{id}}.nii.gz'; "
            f"got {template!r}"
        )
    labels = {key: template.replace("{id}", key) for key in sources}  # other braces stay
    from ctflow.io import remote

    exists = remote.exists if is_url(template) else os.path.exists
    missing = [p for p in labels.values() if not exists(p)]
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InvalidParameterError(
            f"from_glob: {len(missing)} label file(s) of {template!r} do not exist: {shown}"
        )
    return labels


def _by_id(found: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Return sources by id (from_glob); two sources with one id are an error naming both."""
    sources: dict[str, str] = {}
    for key, source in found:
        if key in sources:
            raise InvalidParameterError(
                f"from_glob: two sources have the id {key!r}: {sources[key]} and {source}; "
                f"use Dataset.from_paths with a dict to name them"
            )
        sources[key] = source
    return sources


class Dataset:
    """Ids and sources of the items to process.

    Parameters
    ----------
    sources : mapping of str to path
        Item id -> file or folder.
    batch_class : type, default CTBatch
        Class of the batches :meth:`create_batch` makes.
    storage_options : dict, optional
        fsspec options for sources (and dumps) behind URLs (``s3://`` ...): credentials,
        ``client_kwargs={"endpoint_url": ...}``, ``anon=True`` ... Set in every process that
        makes this dataset's batches (Dask workers too); never in records or dumps
        (:mod:`ctflow.io.remote`).

    Examples
    --------
    >>> ds = Dataset({"scan1": "/data/scan1.mhd"})
    >>> ds.sources["scan1"]
    '/data/scan1.mhd'
    """

    def __init__(
        self,
        sources: Mapping[str, str | os.PathLike[str]],
        batch_class: type[CTBatch] = CTBatch,
        *,
        labels: Mapping[str, str | os.PathLike[str]] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise InvalidParameterError(
                f"dataset: storage_options must be a dict of fsspec options; got "
                f"{type(storage_options).__name__}"
            )
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        # DICOMweb roots -> their request headers and time-out (set by from_dicomweb), set in
        # every process that makes batches, like the storage options
        self._servers: dict[str, dict[str, Any]] = {}
        if not (isinstance(batch_class, type) and issubclass(batch_class, CTBatch)):
            raise InvalidParameterError(
                f"batch_class must be CTBatch or a subclass of it; got {batch_class!r}"
            )
        # ids become folder names of dumps: checked now, not when the first dump is written;
        # absolute paths, so every engine (and every Dask worker, whatever its working folder)
        # reads the same file and dumps record the same source; URLs are left alone
        self.sources: dict[str, str] = {}
        for key, value in sources.items():
            item_id = as_item_id(key, "dataset")
            self.sources[item_id] = as_path(
                os.fspath(value), f"source of item {item_id!r}", "dataset"
            )
        self.labels: dict[str, str] = {}
        for key, value in (labels or {}).items():
            item_id = str(key)
            if item_id not in self.sources:
                raise InvalidParameterError(f"dataset: a label file for unknown item {item_id!r}")
            self.labels[item_id] = as_path(
                os.fspath(value), f"label of item {item_id!r}", "dataset"
            )
        unlabelled = [i for i in self.sources if self.labels and i not in self.labels]
        if unlabelled:
            # a batch holds masks for all its items or for none: say it now, not at load
            raise InvalidParameterError(
                f"dataset: items {unlabelled[:5]} have no label file while "
                f"{len(self.labels)} other(s) do; give every item its label file, or make a "
                f"separate dataset of the unlabelled ones"
            )
        self.batch_class = batch_class

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_glob(
        cls,
        pattern: str | os.PathLike[str],
        dirs: bool = False,
        batch_class: type[CTBatch] = CTBatch,
        *,
        masks: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """All files (or, with ``dirs=True``, folders) matching a glob pattern.

        Ids are file stems (``scan.mhd`` -> ``scan``, ``scan.nii.gz`` -> ``scan``) or folder
        names. ``**`` matches recursively. Two matches with the same id are an error naming both.
        ``masks`` pairs every scan with its label file: a format string on the id, e.g.
        ``"labels/{id}.nii.gz"`` (a missing label file is an error naming it). The pattern may
        be an fsspec URL (``"s3://bucket/scans/*.nii.gz"``, with ``storage_options``).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for n in ("a", "b"):
        ...     _ = (d / f"{n}.mhd").write_text("")
        >>> Dataset.from_glob(str(d / "*.mhd")).ids
        ['a', 'b']
        """
        check_path_text(os.fspath(pattern), "pattern", "from_glob")
        if is_url(str(pattern)):
            return cls._from_url_glob(str(pattern), dirs, batch_class, masks, storage_options)
        matches = sorted(Path(p) for p in globlib.glob(str(pattern), recursive=True))
        matches = [p for p in matches if (p.is_dir() if dirs else p.is_file())]
        if not matches:
            kind = "folders" if dirs else "files"
            raise InvalidParameterError(f"from_glob: no {kind} match {str(pattern)!r}")
        sources = _by_id([(_stem(p, dirs), str(p)) for p in matches])
        labels = None
        if masks is not None:
            labels = _label_files(masks, sources)
        return cls(sources, batch_class, labels=labels, storage_options=storage_options)

    @classmethod
    def _from_url_glob(
        cls,
        pattern: str,
        dirs: bool,
        batch_class: type[CTBatch],
        masks: str | None,
        storage_options: Mapping[str, Any] | None,
    ) -> Dataset:
        from ctflow.io.remote import glob, set_storage_options, split_url

        protocol, _ = split_url(pattern)
        if storage_options is not None:  # else: the options set earlier in this process hold
            set_storage_options(protocol, storage_options)
        matches = glob(pattern, dirs)
        if not matches:
            kind = "folders" if dirs else "files"
            raise InvalidParameterError(f"from_glob: no {kind} match {pattern!r}")
        sources = _by_id([(_stem(Path(split_url(u)[1]), dirs), u) for u in matches])
        labels = None if masks is None else _label_files(masks, sources)
        return cls(sources, batch_class, labels=labels, storage_options=storage_options)

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | os.PathLike[str]] | Mapping[str, Any],
        batch_class: type[CTBatch] = CTBatch,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Return a dataset from a list of paths (ids = stems / folder names) or an id -> path dict.

        A dict's values may also be ``{"images": path, "masks": path}``: a scan and its label
        file (organs, lobes, lesions ...), read into ``masks`` by ``load``.

        Examples
        --------
        >>> Dataset.from_paths(["/d/x.mhd", "/d/series_7"]).ids
        ['x', 'series_7']
        >>> Dataset.from_paths({"a": {"images": "/d/a.nii.gz", "masks": "/l/a.nii.gz"}}).labels
        {'a': '/l/a.nii.gz'}
        """
        if isinstance(paths, Mapping):
            images: dict[str, Any] = {}
            labels: dict[str, Any] = {}
            for key, value in paths.items():
                if isinstance(value, Mapping):
                    unknown = set(value) - {"images", "masks"}
                    if unknown or "images" not in value:
                        raise InvalidParameterError(
                            f"from_paths: item {key!r} must map 'images' (and optionally "
                            f"'masks') to paths; got keys {sorted(value)}"
                        )
                    images[key] = value["images"]
                    if value.get("masks") is not None:
                        labels[key] = value["masks"]
                else:
                    images[key] = value
            return cls(images, batch_class, labels=labels, storage_options=storage_options)
        sources: dict[str, str] = {}
        for raw in paths:
            text = check_path_text(os.fspath(raw), "path", "from_paths")
            if is_url(text):  # an id from the URL's last name (folders end without a suffix)
                from ctflow.io.remote import local_stem

                name = local_stem(text)
                key = _stem(Path(name), "." not in name)
                if key in sources:
                    raise InvalidParameterError(
                        f"from_paths: two paths have the id {key!r}: {sources[key]} and {text}"
                    )
                sources[key] = text
                continue
            p = Path(text)
            key = _stem(p, p.is_dir() or not p.suffix)
            if key in sources:
                raise InvalidParameterError(
                    f"from_paths: two paths have the id {key!r}: {sources[key]} and {p}; "
                    f"pass a dict {{id: path}} instead"
                )
            sources[key] = str(p)
        return cls(sources, batch_class, storage_options=storage_options)

    @classmethod
    def from_dicomweb(
        cls,
        url: str,
        study_uids: str | Sequence[str] | None = None,
        series_filter: Callable[[dict[str, Any]], bool] | None = None,
        *,
        batch_class: type[CTBatch] = CTBatch,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Dataset:
        """Return the CT series of a DICOMweb server (a PACS), listed by QIDO-RS.

        Ids are SeriesInstanceUIDs; each source is the series' URL,
        ``dicomweb+http://host:port/<root>/studies/<study>/series/<series>``, which ``load()``
        retrieves by WADO-RS and reads exactly as a local DICOM folder of the same files
        (:mod:`ctflow.io.dicomweb`).

        Parameters
        ----------
        url : str
            The server's DICOMweb root, e.g. ``"http://localhost:8042/dicom-web"``.
        study_uids : str or sequence of str, optional
            Only the series of these studies (default: every study of the server).
        series_filter : callable, optional
            Called with each CT series' QIDO-RS attributes, a dict keyword -> value (e.g.
            ``{"Modality": "CT", "SeriesDescription": "CT Body 3.0",
            "NumberOfSeriesRelatedInstances": 20, ...}``); the series is kept when it returns
            True (it must return a bool).
        batch_class : type, default CTBatch
            Class of the batches :meth:`create_batch` makes.
        headers : mapping of str to str, optional
            Extra request headers, e.g. ``{"Authorization": "Bearer ..."}``; kept in this
            process for the server's loads, never in sources, records or dumps.
        timeout : float, optional
            Seconds to wait for the server, when listing and when loading (default: the one
            set for the server with ``set_server_options``, else 60).

        Raises
        ------
        InvalidParameterError
            A bad URL or argument, or no CT series left.
        CorruptFileError
            The server cannot be reached or answers an HTTP error (the message names the URL
            and the status).
        UnsupportedFormatError
            The server answers something else than DICOM JSON.

        Examples
        --------
        With a DICOMweb server at ``http://localhost:8042/dicom-web`` (Orthanc's default
        root; ``tests/io/test_dicomweb.py`` starts one)::

            import ctflow as cf

            ds = cf.Dataset.from_dicomweb(
                "http://localhost:8042/dicom-web",
                series_filter=lambda s: s.get("NumberOfSeriesRelatedInstances", 0) >= 20,
            )
            ds.sources[ds.ids[0]]
            # 'dicomweb+http://localhost:8042/dicom-web/studies/1.2.840.1/series/1.2.840.1.2'
            report = (ds >> cf.Pipeline().load().unify_spacing(1.0)).run()
        """
        from ctflow.io.dicomweb import dicomweb_sources

        sources = dicomweb_sources(url, study_uids, series_filter, headers=headers, timeout=timeout)
        dataset = cls(sources, batch_class)
        if headers is not None or timeout is not None:
            dataset._servers[url] = {"headers": headers, "timeout": timeout}
        return dataset

    # ------------------------------------------------------------------ access
    @property
    def ids(self) -> list[str]:
        """Item ids, in dataset order."""
        return list(self.sources)

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.sources)

    def __iter__(self) -> Iterator[str]:
        """Iterate over the items."""
        return iter(self.sources)

    def __contains__(self, item_id: object) -> bool:
        """Return True when the id is in the dataset."""
        return item_id in self.sources

    def __repr__(self) -> str:
        """Return a readable summary."""
        shown = ", ".join(self.ids[:3]) + (", ..." if len(self) > 3 else "")
        return f"Dataset({len(self)} items: [{shown}], batch_class={self.batch_class.__name__})"

    def subset(self, ids: Sequence[str]) -> Dataset:
        """Return a dataset of the given ids (in the given order)."""
        missing = [i for i in ids if i not in self.sources]
        if missing:
            raise InvalidParameterError(f"subset: unknown ids {missing[:5]}")
        out = type(self)(
            {i: self.sources[i] for i in ids},
            self.batch_class,
            labels={i: self.labels[i] for i in ids if i in self.labels},
            storage_options=self.storage_options,
        )
        out._servers = dict(self._servers)
        return out

    def split(
        self, shares: float | Sequence[float] = 0.8, seed: int | None = None
    ) -> tuple[Dataset, ...]:
        """Split into disjoint datasets, e.g. train/test or train/val/test.

        Parameters
        ----------
        shares : float or sequence of floats
            One float ``s`` gives two parts (``s``, ``1 - s``); a sequence gives one part per
            share (shares must be >= 0 and sum to at most 1; a remainder becomes a last part).
        seed : int, optional
            Shuffle ids with this seed before splitting; None keeps dataset order.

        Examples
        --------
        >>> ds = Dataset.from_paths({str(i): f"/d/{i}.mhd" for i in range(10)})
        >>> [len(p) for p in ds.split([0.7, 0.2, 0.1], seed=1)]
        [7, 2, 1]
        """
        vals = [float(shares)] if isinstance(shares, int | float) else [float(s) for s in shares]
        if any(s < 0 for s in vals) or sum(vals) > 1 + 1e-9 or not vals:
            raise InvalidParameterError(
                f"split: shares must be >= 0 and sum to at most 1; got {shares!r}"
            )
        if sum(vals) < 1 - 1e-9:
            vals.append(1 - sum(vals))
        ids = self.ids
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(ids))
            ids = [ids[i] for i in order]
        bounds = np.round(np.cumsum([0.0, *vals]) * len(ids)).astype(int)
        bounds[-1] = len(ids)
        return tuple(self.subset(ids[bounds[k] : bounds[k + 1]]) for k in range(len(vals)))

    def use_storage_options(self, urls: Iterable[str] = ()) -> None:
        """Set this dataset's ``storage_options`` in this process (a Dask worker too).

        They are set for the protocols of the sources' URLs and of ``urls`` (a pipeline's
        destinations: a ``dump`` or ``cache`` directory on object storage); the request
        headers and time-out given to :meth:`from_dicomweb` are set for its server.

        Examples
        --------
        >>> Dataset.from_paths({"a": "/d/a.mhd"}).use_storage_options(["memory://x"])
        """
        if self._servers:
            from ctflow.io.dicomweb import set_server_options

            for root, options in self._servers.items():
                set_server_options(root, **options)
        if not self.storage_options:
            return
        from ctflow.io.remote import set_storage_options, split_url

        found = [s for s in self.sources.values() if is_url(s)] + [u for u in urls if is_url(u)]
        for protocol in {split_url(u)[0] for u in found}:
            set_storage_options(protocol, self.storage_options)

    def create_batch(self, ids: Sequence[str], **kwargs: Any) -> CTBatch:
        """Return a batch (of ``batch_class``) of the given ids, not loaded yet.

        Examples
        --------
        >>> Dataset.from_paths({"a": "/d/a.mhd"}).create_batch(["a"]).sources
        ['/d/a.mhd']
        """
        missing = [i for i in ids if i not in self.sources]
        if missing:
            raise InvalidParameterError(f"create_batch: unknown ids {missing[:5]}")
        self.use_storage_options()
        labels = [self.labels.get(i) for i in ids] if self.labels else None
        return self.batch_class(list(ids), [self.sources[i] for i in ids], labels=labels, **kwargs)
