"""Model files at discovery: names, sizes and headers only.

Discovery runs at every start of `plugins`, `stylize`, `serve` and `cam`, over folders anyone may have
filled, so it never reads weights: a `.pt` is opened as the zip archive torch.save writes (its
directory and the small pickle, not the tensors), an `.onnx` is walked field by field (seeking past
the weights) and only its small parts are parsed, a TorchScript file's code (not its weights) is
checked for what it may call, an `.engine` is only sized; an OpenVINO `.xml` is parsed without DTDs or
entities and its `.bin` sized against what the XML addresses, an ncnn `.param` is parsed line by line
(its `.bin` must be beside it), `.pte` and `.tflite` flatbuffers are checked by identifier and header
sizes. Companion `.bin` files must resolve inside the folder and count toward --max-model-mb. Which
check a file gets follows the runtime backend the formats table says serves it. The weights load when
a style is first used (NeuralPlugin.runner), where the ONNX and OpenVINO backends also check the graph."""

from __future__ import annotations

import json
import logging
import os
import pickletools
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from stylestream.export.formats import format_of, served_suffix_text
from stylestream.plugins.paths import confined
from stylestream.runtime.torchscript_check import check_torchscript

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


def first_line(exc: BaseException) -> str:
    """An exception as one short line (C++ libraries raise pages of trace)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _mb(size: int) -> str:
    return f"{size / MB:.0f}" if size >= 10 * MB else f"{size / MB:.1f}"


def check_model_file(path: Path, folder: Path | None = None,
                     max_model_mb: float = DEFAULT_MAX_MODEL_MB) -> None:  # fmt: skip
    """Cheap check at discovery, so a corrupt or oversized file is reported up front, not on first frame.

    Raises ModelTooLarge over the limit, paths.OutsideFolder when an ONNX model names external data
    outside `folder` (default: the model's folder), and ValueError (the reason) for a broken file."""
    if path.is_dir():  # a folder format (a Core ML .mlpackage): what it holds, not how big its inode is
        size = check_package(path, folder or path.parent)
    else:
        size = path.stat().st_size
    if size == 0:
        raise ValueError("empty file")
    limit = max_model_mb * MB
    if size > limit:  # before any read: an oversized file costs one stat
        raise ModelTooLarge(f"{path.name} is {_mb(size)} MB, over --max-model-mb {max_model_mb:g}; "
                            "raise the limit to load it")  # fmt: skip
    fmt = format_of(path)
    backend = fmt.backend if fmt is not None else None
    if backend is None:
        raise ValueError(f"not a model file stylestream serves (expected {served_suffix_text()})")
    if backend == "torch":
        _check_pt(path)
    elif backend == "torchscript":
        check_torchscript(path)
    elif backend == "onnxruntime":
        extra = sum(f.stat().st_size for f in _check_onnx(path, size, folder or path.parent))
        if size + extra > limit:
            raise ModelTooLarge(f"{path.name} and its external data are {_mb(size + extra)} MB, over "
                                f"--max-model-mb {max_model_mb:g}; raise the limit to load it")  # fmt: skip
    elif backend in ("openvino", "ncnn"):  # NAME.xml / NAME.param + NAME.bin
        check = check_openvino_ir if backend == "openvino" else check_ncnn_param
        weights = check(path, folder or path.parent)
        extra = weights.stat().st_size if weights is not None else 0
        if size + extra > limit:
            raise ModelTooLarge(f"{path.name} and its weights are {_mb(size + extra)} MB, over "
                                f"--max-model-mb {max_model_mb:g}; raise the limit to load it")  # fmt: skip
    elif backend == "executorch":
        check_pte(path)
    elif backend == "litert":
        check_tflite(path)


def check_package(path: Path, folder: Path) -> int:
    """A model folder (NAME.mlpackage): every entry resolves inside `folder` (no symlink out), its
    Manifest.json is small JSON; returns the total size of its files (links not followed)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            entry = Path(dirpath, name)
            confined(folder, entry, "Core ML package file")  # raises OutsideFolder
            if name in filenames and not entry.is_symlink():
                total += entry.stat().st_size
    manifest = path / "Manifest.json"
    if manifest.stat().st_size > MB:
        raise ValueError(f"{manifest.name} is {_mb(manifest.stat().st_size)} MB: not a package manifest")
    try:
        json.loads(manifest.read_bytes())
    except ValueError:
        raise ValueError(f"{manifest.name} is not JSON: not a Core ML package") from None
    return total


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


# ------------------------------------------------------------------------------------ OpenVINO IR

MAX_IR_LAYERS = 100_000  # a style IR has a few hundred layers


class _IRReader:
    """Streams an IR .xml through expat: the <net> version, the top-level Parameter and Result layers,
    and how many bytes of NAME.bin the Const layers (subgraphs included) address."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.layers = 0
        self.params: list[dict[str, str]] = []
        self.results = 0
        self.weights_end = 0
        self._layer_type = ""

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if not self.stack and (name != "net" or attrs.get("version") not in ("10", "11")):
            raise ValueError(f"not an OpenVINO IR (root <{name}> version {attrs.get('version')!r}; "
                             "expected <net> version 10 or 11)")  # fmt: skip
        if name == "layer":
            self.layers += 1
            if self.layers > MAX_IR_LAYERS:
                raise ValueError(f"not a style model (over {MAX_IR_LAYERS} layers)")
            self._layer_type = attrs.get("type", "")
            if self.stack == ["net", "layers"]:
                self.results += self._layer_type == "Result"
        elif name == "data" and self.stack[-1:] == ["layer"]:
            if self._layer_type == "Const" and "offset" in attrs:
                offset, size = (attrs.get(k, "") for k in ("offset", "size"))
                if not (offset.isdigit() and size.isdigit()):
                    raise ValueError(f"not an OpenVINO IR (Const offset {offset!r} size {size!r})")
                self.weights_end = max(self.weights_end, int(offset) + int(size))
            elif self._layer_type == "Parameter" and self.stack == ["net", "layers", "layer"]:
                self.params.append(attrs)
        self.stack.append(name)

    def end(self, name: str) -> None:
        self.stack.pop()


def _refuse(what: str) -> Any:
    def handler(*_: Any) -> None:
        raise ValueError(f"not an OpenVINO IR ({what} refused: an IR has none)")

    return handler


def check_openvino_ir(path: Path, folder: Path) -> Path | None:
    """An OpenVINO IR before OpenVINO reads it: well-formed XML with no DOCTYPE or entities (no expansion
    bombs, no external entities), a <net> of IR version 10/11 with one float32 (N, 3, H, W) Parameter
    and one Result, and its weights NAME.bin beside it, inside `folder` (paths.OutsideFolder otherwise),
    exactly as large as the Const layers' offsets + sizes say. Returns the .bin (None: no weights)."""
    from xml.parsers import expat

    reader = _IRReader()
    parser = expat.ParserCreate()
    parser.StartElementHandler, parser.EndElementHandler = reader.start, reader.end
    parser.StartDoctypeDeclHandler = _refuse("a DOCTYPE")
    parser.EntityDeclHandler = _refuse("an entity declaration")
    parser.ExternalEntityRefHandler = _refuse("an external entity")
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                parser.Parse(block, False)
            parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise ValueError(f"not an OpenVINO IR (XML error: {expat.errors.messages[exc.code]}, "
                         f"line {exc.lineno})") from None  # fmt: skip
    if len(reader.params) != 1 or reader.results != 1:
        raise ValueError(f"not a style model: {len(reader.params)} input(s) and {reader.results} output(s); "
                         "expected one float32 (N, 3, H, W) input and one output")  # fmt: skip
    param = reader.params[0]
    dims = param.get("shape", "").split(",")
    if param.get("element_type") != "f32" or len(dims) != 4 or dims[1] not in ("3", "?", "-1"):
        raise ValueError(f"not a style model: input {param.get('element_type')} [{param.get('shape')}]; "
                         "expected float32 (N, 3, H, W)")  # fmt: skip
    weights = confined(folder, path.with_suffix(".bin").name, "OpenVINO weights", base=path.parent)
    if reader.weights_end == 0:
        return weights if weights.is_file() else None
    if not weights.is_file():
        raise ValueError(f"its weights {weights.name} are missing (an IR is NAME.xml + NAME.bin)")
    size = weights.stat().st_size
    if size != reader.weights_end:
        raise ValueError(f"{weights.name} is {size} bytes but {path.name} addresses {reader.weights_end}: "
                         "truncated, or not this model's weights")  # fmt: skip
    return weights


# ---------------------------------------------------------------------- ExecuTorch, LiteRT (flatbuffers)


def _flatbuffer_id(path: Path, want: re.Pattern[bytes], what: str) -> bytes:
    """A flatbuffer's 4-byte file identifier (bytes 4-8); returns the first 64 bytes."""
    with path.open("rb") as f:
        head = f.read(64)
    if len(head) < 8 or not want.fullmatch(head[4:8]):
        raise ValueError(f"not {what} (file identifier {head[4:8]!r})")
    return head


def check_pte(path: Path) -> None:
    """An ExecuTorch program: identifier ET<nn>, and its extended header's sizes fit the file."""
    head = _flatbuffer_id(path, re.compile(rb"ET\d\d"), "an ExecuTorch program (.pte)")
    if head[8:12] == b"eh00" and len(head) >= 40:  # extended header: program size, segment offset and size
        program, base, segments = struct.unpack_from("<QQQ", head, 16)
        size = path.stat().st_size
        if program > size or (segments and base + segments > size):
            raise ValueError(f"truncated ExecuTorch program (its header says {max(program, base + segments)} "
                             f"bytes, the file has {size})")  # fmt: skip


def check_tflite(path: Path) -> None:
    """A LiteRT / TensorFlow Lite model: identifier TFL3."""
    _flatbuffer_id(path, re.compile(rb"TFL3"), "a LiteRT model (.tflite)")


# -------------------------------------------------------------------------------------------- ncnn

MAX_NCNN_LAYERS = 100_000
_NCNN_MAGIC = "7767517"
_NCNN_LAYER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a layer type: ncnn's built-ins are plain names


def check_ncnn_param(path: Path, folder: Path) -> Path | None:
    """An ncnn .param (text): the magic line, layer and blob counts that match its lines, each layer line
    well formed; one input blob; and its weights NAME.bin beside it, inside `folder`. Returns the .bin."""
    if path.stat().st_size > PARSE_BUDGET:
        raise ValueError(f"not a style model (the .param is over {PARSE_BUDGET // MB} MB)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines or lines[0] != _NCNN_MAGIC:
        raise ValueError(f"not an ncnn .param (first line {lines[0][:20] if lines else ''!r}, expected {_NCNN_MAGIC})")
    counts = lines[1].split() if len(lines) > 1 else []
    if len(counts) != 2 or not all(c.isdigit() for c in counts) or int(counts[0]) > MAX_NCNN_LAYERS:
        raise ValueError(f"not an ncnn .param (counts line {lines[1][:40] if len(lines) > 1 else ''!r})")
    layers = lines[2:]
    if len(layers) != int(counts[0]):
        raise ValueError(f"not an ncnn .param ({len(layers)} layer lines, its header says {counts[0]})")
    inputs = 0
    for n, line in enumerate(layers, 3):
        parts = line.split()
        if len(parts) < 4 or not _NCNN_LAYER.match(parts[0]) or not (parts[2].isdigit() and parts[3].isdigit()):
            raise ValueError(f"not an ncnn .param (line {n}: {line[:60]!r})")
        if len(parts) < 4 + int(parts[2]) + int(parts[3]):
            raise ValueError(f"not an ncnn .param (line {n} names fewer blobs than it counts)")
        inputs += parts[0] == "Input"
    if inputs != 1:
        raise ValueError(f"not a style model ({inputs} Input layers; expected one)")
    weights = confined(folder, path.with_suffix(".bin").name, "ncnn weights", base=path.parent)
    if not weights.is_file():
        raise ValueError(f"its weights {weights.name} are missing (an ncnn model is NAME.param + NAME.bin)")
    return weights
