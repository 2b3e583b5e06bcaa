"""Model files at discovery: names, sizes and headers only.

Discovery runs at every start of `plugins`, `stylize`, `serve` and `cam`, over folders anyone may have
filled, so it never reads weights: a `.pt` is opened as the zip archive torch.save writes (its
directory and the small pickle, not the tensors), an `.onnx` is walked field by field (seeking past
the weights) and only its small parts are parsed, an `.engine` is only sized. The weights load when
a style is first used (NeuralPlugin.runner), where the ONNX backend also checks the graph."""

from __future__ import annotations

import logging
import pickletools
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from stylestream.plugins.paths import confined

log = logging.getLogger(__name__)

MB = 2**20
DEFAULT_MAX_MODEL_MB = 1024.0
SMALL_FIELD = 64 * 1024  # ONNX fields up to this size are parsed at discovery; bigger ones hold weights
PARSE_BUDGET = 64 * MB  # most ONNX bytes parsed at discovery (a style graph is well under 1 MB)
MAX_FIELDS = 200_000  # bounds the walk over a hostile file made of tiny fields (a style net has ~1000)
MAX_PICKLE = 16 * MB  # a .pt's data.pkl holds names and shapes only; the tensors are separate members
MAX_ZIP_ENTRIES = 100_000  # a style .pt has a few hundred; millions would cost GBs of ZipInfo objects


class ModelTooLarge(ValueError):
    """A model file over the --max-model-mb limit (fine, perhaps, but not loaded)."""


def _mb(size: int) -> str:
    return f"{size / MB:.0f}" if size >= 10 * MB else f"{size / MB:.1f}"


def check_model_file(path: Path, folder: Path | None = None,
                     max_model_mb: float = DEFAULT_MAX_MODEL_MB) -> None:  # fmt: skip
    """Cheap check at discovery, so a corrupt or oversized file is reported up front, not on first frame.

    Raises ModelTooLarge over the limit, paths.OutsideFolder when an ONNX model names external data
    outside `folder` (default: the model's folder), and ValueError (the reason) for a broken file."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError("empty file")
    limit = max_model_mb * MB
    if size > limit:  # before any read: an oversized file costs one stat
        raise ModelTooLarge(f"{path.name} is {_mb(size)} MB, over --max-model-mb {max_model_mb:g}; "
                            "raise the limit to load it")  # fmt: skip
    if path.suffix == ".pt":
        _check_pt(path)
    elif path.suffix == ".onnx":
        extra = sum(f.stat().st_size for f in _check_onnx(path, size, folder or path.parent))
        if size + extra > limit:
            raise ModelTooLarge(f"{path.name} and its external data are {_mb(size + extra)} MB, over "
                                f"--max-model-mb {max_model_mb:g}; raise the limit to load it")  # fmt: skip


# -------------------------------------------------------------------------------------------- .pt


def _check_pt(path: Path) -> None:
    """torch.save writes a zip: ARCHIVE/data.pkl (the dict, tensors as references) + ARCHIVE/data/N."""
    try:
        with path.open("rb") as f:
            end = zipfile._EndRecData(f)  # the zip's last record: its entry count, before any is parsed
        if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ZIP_ENTRIES:
            raise ValueError(f"not a stylestream model ({end[zipfile._ECD_ENTRIES_TOTAL]} zip entries)")
        with zipfile.ZipFile(path) as z:  # reads the central directory at the end, not the members
            names = z.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise ValueError("not a torch.save archive (no data.pkl)")
            info = z.getinfo(pkl[0])
            if info.file_size > MAX_PICKLE:
                raise ValueError(f"not a stylestream model (data.pkl is {_mb(info.file_size)} MB)")
            head = z.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"not a torch.save archive ({type(exc).__name__}: {exc})") from None
    _check_pickle_format(head)


def _check_pickle_format(pkl: bytes) -> None:
    """save_model's dict starts with "format": "stylestream-model"; disassembled, never unpickled."""
    from stylestream.models.io import FORMAT

    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(pkl):
            if isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
            if len(strings) >= 2:
                break
    except Exception as exc:  # noqa: BLE001 -- genops raises several kinds on garbage
        raise ValueError(f"not a torch.save archive (corrupt data.pkl: {exc})") from None
    if strings != ["format", FORMAT]:
        raise ValueError("not a stylestream model file; expected a model.pt written by `stylestream train`")


# ------------------------------------------------------------------------------------------- .onnx


def _varint(f: IO[bytes]) -> int:
    value = shift = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            raise ValueError("truncated")
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
    raise ValueError("bad varint")


def _fields(f: IO[bytes], start: int, end: int, message: Any) -> Iterator[tuple[Any, int, int, int]]:
    """(field descriptor, field start, value start, field end) of each field of a protobuf `message`
    stored in f[start:end]. Values are skipped by seeking, never read; every field number and wire
    type must be one the message declares, so garbage fails within a few bytes."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    length_delimited = {FD.TYPE_MESSAGE, FD.TYPE_STRING, FD.TYPE_BYTES}
    pos = start
    for _ in range(MAX_FIELDS):
        if pos >= end:
            return
        f.seek(pos)
        key = _varint(f)
        field = message.DESCRIPTOR.fields_by_number.get(key >> 3)
        wire = 2 if field is not None and field.type in length_delimited else 0
        if field is None or key & 7 != wire:
            why = f"unexpected protobuf field {key >> 3} in {message.__name__}"
            raise ValueError(f"not an ONNX model ({why})")
        if wire == 0:
            value = f.tell()
            _varint(f)
            stop = f.tell()
        else:
            size = _varint(f)
            value = f.tell()
            stop = value + size
        if stop > end:
            raise ValueError(f"truncated ({message.__name__}.{field.name} runs past the end of the file)")
        yield field, pos, value, stop
        pos = stop
    raise ValueError(f"not an ONNX model (over {MAX_FIELDS} fields in {message.__name__})")


def _parse_small(f: IO[bytes], start: int, stop: int, message: Any) -> Any:
    """One field (tag included) parsed as a one-field `message` by protobuf itself."""
    from google.protobuf.message import DecodeError

    f.seek(start)
    try:
        return message.FromString(f.read(stop - start))
    except DecodeError as exc:
        raise ValueError(f"not an ONNX model ({message.__name__}: {exc})") from None


def _check_onnx(path: Path, size: int, folder: Path) -> set[Path]:
    """Walk the ModelProto and its graph without reading weights; parse the small parts (opsets, nodes,
    inputs/outputs, initializers whose data lives elsewhere). Returns the external data files."""
    import onnx

    files: set[Path] = set()
    seen = set()
    budget = PARSE_BUDGET  # past it, external data is still checked before first use (check_onnx_model)
    with path.open("rb") as f:
        for field, start, value, stop in _fields(f, 0, size, onnx.ModelProto):
            seen.add(field.name)
            if field.name == "graph":
                for _, g_start, _, g_stop in _fields(f, value, stop, onnx.GraphProto):
                    if g_stop - g_start <= min(SMALL_FIELD, budget):  # one part at a time: memory stays small
                        budget -= g_stop - g_start
                        part = _parse_small(f, g_start, g_stop, onnx.GraphProto)
                        files |= external_data_files(graph_tensors(part), path, folder)
            elif stop - start <= SMALL_FIELD:
                _parse_small(f, start, stop, onnx.ModelProto)
    if not {"ir_version", "graph"} <= seen:
        raise ValueError("not an ONNX model (no " + " or ".join(sorted({"ir_version", "graph"} - seen)) + ")")
    return files


def graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, sparse initializers and node attributes, subgraphs
    included (where ONNX allows external data)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from graph_tensors(sub)


def external_data_files(tensors: Iterable[Any], model_path: Path, folder: Path) -> set[Path]:
    """The files the tensors' external data live in. Locations are relative to the model file, and each
    must resolve inside `folder` (paths.OutsideFolder otherwise) and exist (ValueError otherwise)."""
    from onnx import TensorProto

    files = set()
    for t in tensors:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = confined(folder, location, "external data", base=model_path.parent)
        if not target.is_file():
            raise ValueError(f"external data {location!r} of tensor {t.name!r} not found")
        files.add(target)
    return files
