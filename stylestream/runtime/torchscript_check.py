"""What a TorchScript file may contain before `torch.jit.load` reads it. TorchScript is code:
loading runs an archive's `__setstate__` methods, and its ops include file access (aten::from_file).
Plugin folders are untrusted, so the archive's code (small Python-syntax text under ARCHIVE/code/,
never the weights) is parsed and may only call tensor maths a style network needs, its own
modules' and functions' code, and a few builtins."""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

MAX_ENTRIES = 100_000  # a style archive has a few hundred; millions would cost GBs of ZipInfo objects
MAX_CODE_BYTES = 16 * 2**20  # code of a style network is tens of KB

# torch.X / ops.aten.X in serialized TorchScript: the maths of convnets, nothing that touches files or processes
TENSOR_OPS = frozenset({
    "_convolution", "conv1d", "conv2d", "conv_transpose2d", "convolution", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "instance_norm", "batch_norm", "group_norm", "layer_norm", "linear", "matmul", "bmm",
    "einsum", "softmax", "dropout", "feature_dropout", "relu", "relu_", "leaky_relu", "leaky_relu_", "gelu", "silu",
    "sigmoid", "tanh", "hardtanh", "hardtanh_", "elu", "prelu", "clamp", "clamp_", "clamp_min", "clamp_max",
    "where", "lerp", "abs", "neg", "exp", "log", "pow", "sqrt", "rsqrt", "floor", "ceil", "round", "add", "add_",
    "sub", "sub_", "mul", "mul_", "div", "div_", "rsub", "remainder", "floor_divide", "mean", "sum", "std", "var",
    "max", "min", "maximum", "minimum", "size", "dim", "len", "slice", "select", "narrow", "pad", "constant_pad_nd",
    "reflection_pad2d", "replication_pad2d", "reshape", "view", "flatten", "permute", "transpose", "contiguous",
    "cat", "stack", "chunk", "split", "unsqueeze", "squeeze", "expand", "expand_as", "repeat", "pixel_shuffle",
    "pixel_unshuffle", "upsample_nearest2d", "upsample_bilinear2d", "interpolate", "to", "type_as", "detach",
    "clone", "zeros", "ones", "zeros_like", "ones_like", "full", "tensor", "Int", "Float", "Bool", "IntImplicit",
    "FloatImplicit", "ScalarImplicit",
})  # fmt: skip
PRIM_OPS = frozenset({"NumToTensor", "dtype", "device", "shape", "min", "max", "unchecked_cast", "RaiseException",
                      "Uninitialized"})  # fmt: skip
BUILTINS = frozenset({"int", "float", "bool", "len", "getattr", "annotate", "unchecked_cast", "isinstance",
                      "uninitialized", "range", "min", "max", "round", "str"})  # fmt: skip
METHODS = frozenset({"forward", "append", "extend", "insert", "pop", "index", "keys", "values", "items", "get",
                     "format"})  # fmt: skip
FORBIDDEN_METHODS = frozenset({"__setstate__", "__getstate__"})  # run by torch.jit.load itself


def _dotted(node: ast.expr) -> list[str] | None:
    """`torch.ops.aten.add` -> ['torch', 'ops', 'aten', 'add']; None when not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _call_allowed(func: ast.expr) -> bool:
    name = _dotted(func)
    if name is None:  # (self.stem).forward(x), a method of a computed value
        return isinstance(func, ast.Attribute) and func.attr in METHODS
    root, rest = name[0], name[1:]
    if root == "torch":
        return len(rest) == 1 and rest[0] in TENSOR_OPS
    if root == "ops":
        return len(rest) == 2 and rest[1] in {"aten": TENSOR_OPS, "prim": PRIM_OPS}.get(rest[0], ())
    if root in ("self", "__torch__"):  # this archive's own methods and functions: checked here too
        return True
    if not rest:
        return root in BUILTINS
    return rest[-1] in METHODS  # a method of a local value (a submodule, a list)


def check_code(source: str, where: str) -> None:
    """ValueError naming the first construct a style's TorchScript has no business running."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"not a TorchScript archive ({where} does not parse: {exc.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in FORBIDDEN_METHODS:
            raise ValueError(f"TorchScript defines {node.name} ({where}), which runs on load; refused")
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Lambda)):
            raise ValueError(f"TorchScript uses `{type(node).__name__.lower()}` ({where}); refused")  # noqa: TRY004
        if isinstance(node, ast.Call) and not _call_allowed(node.func):
            raise ValueError(f"TorchScript calls {ast.unparse(node.func)[:80]} ({where}), which a style "
                             "network has no need for; refused")  # fmt: skip


def check_torchscript(path: Path) -> None:
    """Refuse, before torch.jit.load, a file that is not a TorchScript archive or whose code does more
    than tensor maths. Reads the zip directory and the code files only (not the weights)."""
    try:
        with Path(path).open("rb") as f:
            end = zipfile._EndRecData(f)  # the entry count, before any entry is parsed
        if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ENTRIES:
            raise ValueError(f"not a style model ({end[zipfile._ECD_ENTRIES_TOTAL]} zip entries)")
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            roots = {i.filename.split("/", 1)[0] for i in infos}
            code = [i for i in infos if i.filename.count("/") >= 2 and i.filename.split("/")[1] == "code"
                    and i.filename.endswith(".py")]  # fmt: skip
            if len(roots) != 1 or not code or f"{next(iter(roots))}/constants.pkl" not in z.namelist():
                raise ValueError("not a TorchScript archive (no code/ and constants.pkl; a torch.save "
                                 "file belongs in NAME.pt)")  # fmt: skip
            if sum(i.file_size for i in code) > MAX_CODE_BYTES:
                raise ValueError(f"not a style model (over {MAX_CODE_BYTES // 2**20} MB of TorchScript code)")
            for info in code:
                check_code(z.read(info).decode("utf-8", errors="replace"), info.filename.split("/", 1)[1])
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"not a TorchScript archive ({type(exc).__name__}: {exc})") from None
