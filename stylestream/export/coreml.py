"""Core ML ML Programs (NAME.mlpackage, a folder) for iPhone, iPad and Mac, through coremltools: FP16
(the default: the precision the GPU and the Neural Engine compute in) or FP32 (CPU/GPU).

The model is traced (torch.jit.trace, coremltools' TorchScript frontend) and converted with a flexible
input: `input`, float32 (N, 3, H, W) RGB in [0, 255], H and W each a range (ct.RangeDim MIN_SIDE..
MAX_SIDE, default DEFAULT_SIZE: Core ML runs only that size on the Neural Engine, others on GPU/CPU),
N a range up to MAX_BATCH; --static and --batch fix them. The output is `output`, float32, same shape.
Deployment target iOS 16 / macOS 13 (MIL opset CoreML6: pixel_unshuffle for `lite`).

The nets reflect-pad H and W up to a multiple of 4 by an amount that depends on the size
(models.layers.pad_to_multiple). coremltools refuses a pad whose amounts are not constants on tensors
over 1-D, so while one conversion runs, `_dynamic_pad` translates such a pad into one gather per
padded axis, its indices a range folded back at the edges: torch's reflect (or replicate) padding,
exactly, at every size. A fixed-size (--static) trace folds that arithmetic to 1-element arrays, which
coremltools' aten::Int translation hands to int() (refused by numpy 2): `_folded_int` takes .item().

Core ML runs only on Apple systems. Every export's spec is read back from disk and checked here (ML
Program, names, dtypes, shape ranges, weight precision: `structure`); on macOS verification then runs it
like the other formats (the coreml runtime backend); elsewhere that check is all there is, and the card
says verification was not run (Format.runs_on)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stylestream.export.formats import ExportError
from stylestream.plugins.modelfiles import first_line

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)

MIN_SIDE, MAX_SIDE = 16, 4096  # the H and W range of a flexible export (min as the exporter's --static)
DEFAULT_SIZE = (480, 640)  # H, W: the shape Core ML prepares (and runs on the Neural Engine) by default
MAX_BATCH = 64
TARGET = "iOS16"  # ct.target: iOS 16 / macOS 13 / tvOS 16 / watchOS 9
_PRECISION = {"FLOAT16": "fp16", "FLOAT32": "fp32"}  # MIL tensor dtypes -> our precision names


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[Any]:
    """Import coremltools without its import-time warnings (no native runtime off macOS, untested
    torch/scikit-learn versions): logged at debug level here instead."""
    ct_log = logging.getLogger("coremltools")
    level = ct_log.level
    ct_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
        yield ct
    finally:
        ct_log.setLevel(level)


def _dim(fixed: int | None, low: int, high: int, default: int, ct: Any) -> Any:
    return fixed if fixed is not None else ct.RangeDim(lower_bound=low, upper_bound=high, default=default)


def _const_int(v: Any) -> int | None:
    """A pad amount as an int when it is known at conversion time, else None."""
    from coremltools.converters.mil.mil import Var

    if isinstance(v, Var):
        return None if v.val is None else int(v.val)
    return int(v)


def pad_axis(x: Any, axis: int, before: Any, after: Any, mode: str) -> Any:
    """MIL ops padding `x` along `axis` by `before`/`after` (ints or int32 scalar Vars known only at run
    time) in torch's `reflect` or `replicate` mode: a gather with indices range(-before, n + after),
    reflected (|i|, then 2(n-1) - that past the end) or clamped into [0, n-1]."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Var

    n = mb.slice_by_index(x=mb.shape(x=x), begin=[axis], end=[axis + 1], squeeze_mask=[True])
    start = mb.mul(x=before, y=-1) if isinstance(before, Var) else -int(before)
    i = mb.range_1d(start=start, end=mb.add(x=n, y=after), step=1)
    last = mb.sub(x=n, y=1)
    if mode == "reflect":
        folded = mb.maximum(x=i, y=mb.mul(x=i, y=-1))
        index = mb.minimum(x=folded, y=mb.sub(x=mb.mul(x=last, y=2), y=folded))
    else:
        index = mb.minimum(x=mb.maximum(x=i, y=0), y=last)
    return mb.gather(x=x, indices=index, axis=axis)


def _dynamic_pad(original: Any) -> Any:
    """coremltools' `pad` translation, extended to reflect/replicate pads whose amounts are computed at
    run time (the size-dependent pad of pad_to_multiple): one gather per padded axis."""
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.mil import Var

    def pad(context: Any, node: Any) -> None:
        inputs = _get_inputs(context, node)
        x, amounts = inputs[0], inputs[1]
        mode = inputs[2] if len(inputs) > 2 else "constant"
        mode = mode.val if isinstance(mode, Var) else mode
        if not isinstance(amounts, list) or mode not in ("reflect", "replicate"):
            return original(context, node)  # constant amounts (or another mode): coremltools' own
        for k in range(len(amounts) // 2):  # torch order: last axis first, (before, after) each
            before, after = amounts[2 * k], amounts[2 * k + 1]
            if _const_int(before) == 0 and _const_int(after) == 0:
                continue
            x = pad_axis(x, x.rank - 1 - k, before, after, mode)
        context.add(x, torch_name=node.name)

    return pad


def _folded_int(original: Any) -> Any:
    """coremltools' `int` translation, for a constant that is a 1-element array (the shape arithmetic of
    a fixed-size trace): numpy 2 refuses int() of those, so it is taken with .item()."""
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    def int_(context: Any, node: Any) -> None:
        x = _get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and isinstance(x.val, np.ndarray) and x.val.ndim and x.val.size == 1:
            return context.add(mb.const(val=int(x.val.item()), name=node.name), node.name)
        return original(context, node)

    return int_


@contextlib.contextmanager
def translations() -> Iterator[None]:
    """`_dynamic_pad` and `_folded_int` as coremltools' translations of aten::pad and aten::Int, for the
    duration of one conversion (then coremltools' own again)."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    patches = {"pad": _dynamic_pad, "int": _folded_int}
    originals = {name: _TORCH_OPS_REGISTRY.get_func(name) for name in patches}
    for name, patch in patches.items():
        _TORCH_OPS_REGISTRY.set_func_by_name(patch(originals[name]), name)
    try:
        yield
    finally:
        for name, original in originals.items():
            _TORCH_OPS_REGISTRY.set_func_by_name(original, name)


def _convert(job: ExportJob, precision: str) -> None:
    import numpy as np
    import torch

    options = job.options
    h, w = options.static or DEFAULT_SIZE
    example = torch.rand(options.batch or 1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    with quiet_coremltools() as ct:
        shape = ct.Shape(shape=(
            _dim(options.batch, 1, MAX_BATCH, 1, ct), 3,
            _dim(options.static[0] if options.static else None, MIN_SIDE, MAX_SIDE, h, ct),
            _dim(options.static[1] if options.static else None, MIN_SIDE, MAX_SIDE, w, ct),
        ))  # fmt: skip
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic (checked after), versions
                traced = torch.jit.trace(job.model.eval(), example, check_trace=False)
                with translations():
                    mlmodel = ct.convert(
                        traced, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, TARGET),
                        inputs=[ct.TensorType(name="input", shape=shape, dtype=np.float32)],
                        outputs=[ct.TensorType(name="output", dtype=np.float32)],
                        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                    )  # fmt: skip
            mlmodel.short_description = f"stylestream style transfer: {job.name}"
            mlmodel.save(str(job.artifact))
        except Exception as exc:  # noqa: BLE001 - tracing and the converter raise many kinds; one line says why
            raise ExportError(f"coremltools could not convert the model ({first_line(exc)})") from None
    facts = structure(job.artifact)
    wanted = {
        "input": {"name": "input", "dtype": "float32", "shape": [_range(options.batch, 1, MAX_BATCH), 3,
                  *(_range(s, MIN_SIDE, MAX_SIDE) for s in options.static or (None, None))]},
        "output": {"name": "output", "dtype": "float32", "shape": [
            options.batch or "?", 3, *(options.static or ("?", "?"))]},  # an odd --static size comes back whole
        "weights": precision, "compute": precision,
    }  # fmt: skip
    wrong = [f"{k}: {facts[k]} (expected {v})" for k, v in wanted.items() if facts[k] != v]
    if wrong:
        raise ExportError(f"the Core ML package is not what was converted: {'; '.join(wrong)}")
    job.info["coreml"] = {
        "coremltools": version("coremltools"), "deployment_target": "iOS 16 / macOS 13", **facts,
        "default_size": list(options.static or DEFAULT_SIZE),
        "neural_engine": "FP16 programs only, and of a flexible one only the default size (others run on GPU/CPU); "
                         "--static fixes the size" if precision == "fp16" else "no (FP32 runs on CPU/GPU)",
    }  # fmt: skip


def _range(fixed: int | None, low: int, high: int) -> int | str:
    return fixed if fixed is not None else f"{low}..{high}"


def structure(package: Path) -> dict[str, Any]:
    """What a saved .mlpackage declares, read from its spec (nothing runs): model type, input (name,
    dtype, shape: a size or "LOW..HIGH" per dimension), output (name, dtype, and the shape the converter
    inferred for the program's result: a size, or "?" where it depends on the input), the MIL ops, and
    the precision of the conv weights and of the conv outputs (what the program computes in)."""
    with quiet_coremltools() as ct:
        try:
            spec = ct.utils.load_spec(str(package))
        except Exception as exc:  # noqa: BLE001 - a broken package raises anything
            raise ExportError(f"{package.name}: not a loadable Core ML package ({first_line(exc)})") from None
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram" or len(spec.description.input) != 1 or len(spec.description.output) != 1:
        raise ExportError(f"{package.name}: not a style model ({kind} with {len(spec.description.input)} input(s) "
                          f"and {len(spec.description.output)} output(s))")  # fmt: skip
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    consts = {op.outputs[0].name: op.outputs[0].type.tensorType.dataType for op in ops if op.type == "const"}
    convs = [op for op in ops if op.type == "conv"]
    mil = ct.proto.MIL_pb2.DataType

    def precision(dtype: int | None) -> str:
        name = mil.Name(dtype) if dtype in mil.values() else "none"
        return _PRECISION.get(name, name.lower())

    weights = {precision(consts.get(op.inputs["weight"].arguments[0].name)) for op in convs}
    compute = {precision(op.outputs[0].type.tensorType.dataType) for op in convs}
    block = fn.block_specializations[fn.opset]
    result = next((o.type.tensorType for op in ops for o in op.outputs if o.name in block.outputs[:1]), None)
    output = _feature(spec.description.output[0], ct, with_shape=False)
    if result is not None:  # the program's own output type: sizes the converter resolved, "?" where dynamic
        output["shape"] = [d.constant.size if d.WhichOneof("dimension") == "constant" else "?"
                           for d in result.dimensions]  # fmt: skip
    return {
        "model_type": "mlProgram", "specification_version": spec.specificationVersion, "opset": fn.opset,
        "input": _feature(spec.description.input[0], ct, with_shape=True),
        "output": output,
        "weights": "/".join(sorted(weights)) or "none", "compute": "/".join(sorted(compute)) or "none",
        "ops": dict(sorted(Counter(op.type for op in ops if op.type != "const").items())),
    }  # fmt: skip


def _feature(feature: Any, ct: Any, with_shape: bool) -> dict[str, Any]:
    """name, dtype (float32, float16, int32...; the feature kind when not a multi-array) and shape."""
    if feature.type.WhichOneof("Type") != "multiArrayType":
        return {"name": feature.name, "dtype": str(feature.type.WhichOneof("Type"))}
    arr = feature.type.multiArrayType
    out: dict[str, Any] = {"name": feature.name,
                           "dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()}
    if with_shape:
        ranges = arr.shapeRange.sizeRanges
        out["shape"] = ([r.lowerBound if r.lowerBound == r.upperBound else f"{r.lowerBound}..{r.upperBound}"
                         for r in ranges] if ranges else list(arr.shape))  # fmt: skip
    return out


def build_coreml(job: ExportJob) -> None:
    _convert(job, "fp16")


def build_coreml_fp32(job: ExportJob) -> None:
    _convert(job, "fp32")
