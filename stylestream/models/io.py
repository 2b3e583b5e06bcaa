"""One-file model format: weights + architecture config (+ optional card) in a torch.save dict.

Loaded with `weights_only=True`, so a model file cannot run code.

Also the file rules every layer shares: `atomic_write` (temp file + rename, mode from the umask,
disk-full and read-only errors as one `WriteError` naming the file), `remove_stale_temps` for what a
killed process left behind, and `open_image`, PIL's open bounded by MAX_IMAGE_PIXELS."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from stylestream.models.registry import build_model

log = logging.getLogger(__name__)

FORMAT = "stylestream-model"
FORMAT_VERSION = 2  # 2: `johnson` has the study's linear head
# architectures renamed since an older format version: what a file of that version means by the name
RENAMED_SINCE = {1: {"johnson": "johnson-tanh"}}  # v1's `johnson` ended in a scaled tanh

# The one pixel limit for every image stylestream decodes (train data, style images, stylize inputs):
# a few-KB PNG can declare 20000x20000 and inflate to gigabytes. PIL enforces it too (it warns above the
# limit and raises above twice it), and so does OpenCV's decoder, which reads this variable on first use.
MAX_IMAGE_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

# Temp names carry the writer's pid, so a later run can tell a killed writer's leftovers from a live
# one's: `.NAME.<pid>.<random>.tmp[.ext]` (atomic_write) and `.stylestream-export-<pid>-<random>` (export).
EXPORT_TMP_PREFIX = ".stylestream-export-"
_TEMP_NAME = re.compile(
    r"^(?:\..+\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9]+)?"
    rf"|{re.escape(EXPORT_TMP_PREFIX)}(?P<dir_pid>\d+)-[a-z0-9_]{{8}})$"
)
STALE_AFTER_S = 24 * 3600  # a temp this old is stale even if its pid is alive (reused, or another host's)

# errors that mean "this output cannot be written here", not "this input is bad"
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_ADVICE = {errno.ENOSPC: "free space", errno.EDQUOT: "free space (disk quota exceeded)", errno.EFBIG: "free space",
           errno.EROFS: "make it writable", errno.EACCES: "make it writable", errno.EPERM: "make it writable"}  # fmt: skip


class ModelLoadError(ValueError):
    """A model file that is missing, corrupt or not a stylestream model. The message names the file."""


class ImageTooLargeError(ValueError):
    """An image over MAX_IMAGE_PIXELS, refused before its pixels are decoded. The message names the file."""


class WriteError(OSError):
    """An output that cannot be written: disk full, read-only, no permission. `line(option)` is the
    one-line user message, e.g. "cannot write OUT: No space left on device (errno 28); free space or
    choose another --out"."""

    def __init__(self, path: str | os.PathLike, code: int, strerror: str | None = None):
        super().__init__(code, strerror or os.strerror(code))
        self.path = Path(path)

    def line(self, option: str = "--out") -> str:
        advice = _ADVICE.get(self.errno, "check it")
        return f"cannot write {self.path}: {self.strerror} (errno {self.errno}); {advice} or choose another {option}"

    def __str__(self) -> str:
        return self.line()


# ----------------------------------------------------------------------------- file modes


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask. Linux shows it in /proc, which changes nothing; elsewhere it can only be read by
    setting it, so that happens under a lock, with a strict temporary value (a file another thread creates
    meanwhile gets fewer permissions, never more)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open() would give a new file: 0o666 less the umask (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def apply_file_modes(path: str | os.PathLike) -> None:
    """Give a file, or a folder and everything in it, the modes open()/mkdir() would have given them
    (temp files and folders are created 0600/0700, and the mode survives the rename)."""
    path = Path(path)
    mask = current_umask()
    if not path.is_dir():
        os.chmod(path, 0o666 & ~mask)
        return
    os.chmod(path, 0o777 & ~mask)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


# ----------------------------------------------------------------------------- writing


def _out_of_space(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return False
    root = hasattr(os, "geteuid") and os.geteuid() == 0  # root may also fill the blocks reserved for it
    return (st.f_bfree if root else st.f_bavail) * st.f_frsize < margin


@contextlib.contextmanager
def writing(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn a failure to write `path` into a WriteError naming it: an OSError whose errno is about the
    output (full, read-only, no permission), or a bare RuntimeError/OSError without errno while `folder`
    (default: the parent) is out of space (torch.save to a path and cv2.imwrite report a full disk so)."""
    try:
        yield
    except WriteError:
        raise
    except Exception as exc:
        code = exc.errno if isinstance(exc, OSError) else None
        if code not in _OUTPUT_ERRNOS:
            # only the bare kinds writers use without an errno; stylestream's own errors name their cause
            bare = type(exc) in (RuntimeError, OSError)
            if not bare or not _out_of_space(Path(folder or Path(path).parent)):
                raise
            code = errno.ENOSPC
        strerror = exc.strerror if isinstance(exc, OSError) and exc.errno == code else None
        raise WriteError(path, code, strerror) from None


def atomic_write(path: str | os.PathLike, write, keep_suffix: bool = False) -> None:
    """Write via a temp file in the same folder + rename, so a killed process never leaves a torn file.

    `write(tmp)` writes the temp file (named `.NAME.<pid>.<random>.tmp`, plus NAME's suffix when
    `keep_suffix`, for writers that pick the format from it). The result gets the mode open() would have
    given it; a write that fails leaves no temp file and raises WriteError when the disk is the cause."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".tmp" + (path.suffix if keep_suffix else ""), dir=path.parent)  # fmt: skip
        os.close(fd)
    try:
        with writing(path):  # inside the cleanup, so a full disk is seen before the temp file frees space
            write(tmp)
            os.chmod(tmp, file_mode())  # mkstemp's 0600 would survive the rename
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a Python file, so a full disk is an OSError (ENOSPC), not a bare RuntimeError."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's live process (or no way to tell): keep its files
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files and folders a killed stylestream process left in `folder` (not recursive):
    those whose writer's pid is no longer running, and any older than STALE_AFTER_S (a pid reused, or
    a writer on another host or in another container). A live writer's temps are left alone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if not m:
            continue
        pid = int(m.group("pid") or m.group("dir_pid"))
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            if _pid_alive(pid) and not old:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as exc:
            log.warning("could not remove the stale temp file %s: %s", entry.path, exc)
            continue
        log.info("removed %s, left by a process that stopped (pid %d)", entry.path, pid)
        removed.append(Path(entry.path))
    return removed


# ----------------------------------------------------------------------------- images


def open_image(path: str | os.PathLike) -> Image.Image:
    """PIL's lazy open (header only), refusing an image over MAX_IMAGE_PIXELS before any pixel is
    decoded (ImageTooLargeError). Other errors are PIL's own; the caller's reader turns them into its
    layer's error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit: refuse, do not warn
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            m = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(m.group(1)) / 1e6:.0f} MP" if m else "too many pixels"
            raise ImageTooLargeError(_too_large(path, size)) from None
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:  # PIL's own limit may have been changed by other code
        img.close()
        raise ImageTooLargeError(_too_large(path, f"{w}x{h}, {w * h / 1e6:.0f} MP"))
    return img


def _too_large(path: str | os.PathLike, size: str) -> str:
    return (f"{path}: image too large ({size}; the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} MP, "
            "a guard against decompression bombs); downscale it")  # fmt: skip


# ----------------------------------------------------------------------------- models


def model_config(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "stylestream_config", None)
    if cfg is None:
        raise ValueError("model was not built by stylestream.models.build_model; its config is unknown")
    return dict(cfg)


def save_model(model: nn.Module, path: str | os.PathLike, card: dict[str, Any] | None = None) -> None:
    cfg = model_config(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "version": FORMAT_VERSION, "arch": cfg.pop("arch"), "config": cfg,
            "state_dict": state, "card": card or {}}  # fmt: skip
    atomic_write(path, lambda tmp: torch_save(blob, tmp))


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many kinds for garbage input
        reason = str(exc).splitlines()[0][:200]
        if "weights_only" in reason:  # torch's advice to unpickle with code execution: never for a model file
            reason = "not a torch.save archive of tensors"
        raise ModelLoadError(
            f"{path}: not a readable stylestream model ({type(exc).__name__}: {reason}); "
            "expected a model.pt written by `stylestream train`"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        hint = ""
        if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
            hint = " (it looks like a bare state_dict; stylestream needs the architecture config too)"
        raise ModelLoadError(f"{path}: not a stylestream model file{hint}")
    if blob.get("version", 0) > FORMAT_VERSION:
        raise ModelLoadError(f"{path}: model format v{blob['version']} is newer than this stylestream supports")
    return blob


def file_arch(blob: dict[str, Any]) -> str:
    """The architecture a model file holds, in today's names (a v1 `johnson` is `johnson-tanh`)."""
    arch = blob["arch"]
    for version, renamed in sorted(RENAMED_SINCE.items()):
        if int(blob.get("version", 1)) <= version:
            arch = renamed.get(arch, arch)
    return arch


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load a model saved by `save_model`, in eval mode on CPU. Its raw output is unbounded for some
    architectures: wrap it in stylestream.models.inference_model where images leave it."""
    blob = read_model_file(path)
    try:
        model = build_model(file_arch(blob), **blob["config"])
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # noqa: BLE001 -- any mismatch means: not this architecture
        raise ModelLoadError(f"{path}: weights do not fit architecture {blob.get('arch')!r}: {exc}") from None
    model.stylestream_card = blob.get("card", {})
    return model.eval()


def load_card(path: str | os.PathLike) -> dict[str, Any]:
    return dict(read_model_file(path).get("card", {}))
