"""Export one model to one format (or all of them): build in a scratch folder beside the output,
verify against PyTorch, and only then move the file into place and write its card. A failed
verification leaves nothing that looks like a good export (only OUT.rejected.png to look at).

The scratch folder is `.stylestream-export-<pid>-<random>`, so a later export can remove one that a
killed export left; what is moved out of it gets the modes open()/mkdir() would give (0666/0777 less
the umask). A full or read-only disk raises WriteError and leaves no scratch folder, no half export."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stylestream.export.card import base_name, card_path, safe_name, write_card
from stylestream.export.formats import (
    FORMATS,
    PRECISIONS,
    ExportError,
    Format,
    VerificationError,
    format_names,
)
from stylestream.export.job import ExportJob
from stylestream.export.options import ExportOptions
from stylestream.models.io import EXPORT_TMP_PREFIX, WriteError, apply_file_modes, remove_stale_temps, writing
from stylestream.runtime import BACKENDS, Backend, BackendUnavailable, open_model

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    format: str
    status: str  # "ok" | "failed" | "skipped"
    path: Path | None = None
    card: Path | None = None
    verification: dict[str, Any] | None = None
    message: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def load_export_model(model_path: Path) -> Any:
    """The model as exports and the benchmark see it: loaded and clamped to [0, 255] (a Clip in ONNX)."""
    from stylestream.models import ModelLoadError, inference_model, load_model

    try:
        return inference_model(load_model(model_path))  # clamped to [0, 255]: a Clip in the export
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from None


def preflight(fmt: Format, options: ExportOptions) -> None:
    """Fail fast, before any work, on what the format's row needs and this machine or command lacks."""
    precision = fmt.precision or options.precision
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    fmt.preflight(options)  # the row's requirements (pip extra, GPU) and its own option checks
    if (fmt.calibration or precision == "int8") and options.calibration is None:
        raise ExportError(
            f"{fmt.name} at INT8 needs calibration data: pass --calibration DIR (a folder of images) or a "
            "video file with frames like the ones the style will see"
        )
    for h, w in [options.static] if options.static else []:
        if min(h, w) < 16:
            raise ExportError(f"--static {w}x{h}: both sides must be >= 16 px")
    if options.batch is not None and options.batch < 1:
        raise ExportError(f"--batch must be >= 1 or 'dynamic', got {options.batch}")


def open_for_verification(fmt: Format, artifact: Path, options: ExportOptions) -> Backend:
    """The runtime backend serving uses, on the file the format's server loads (`Format.verify_target`),
    on --device (a GPU-only backend on the GPU). A runtime that cannot run here is an ExportError."""
    backend, path = fmt.verify_target(artifact, options)
    device = "cuda" if BACKENDS[backend].gpu_only else options.device
    try:
        return open_model(path, backend, device, root=artifact if artifact.is_dir() else artifact.parent)
    except (BackendUnavailable, ValueError) as exc:  # DeviceError is a ValueError
        raise ExportError(f"cannot verify the {fmt.name} export: {exc}") from None


def _verification_frames(options: ExportOptions) -> tuple[list[Any], str]:
    from stylestream.media import MediaError, default_images, load_frames

    source = options.verify_images or options.calibration or default_images()
    try:
        return load_frames(source, options.verify_frames), str(source)
    except MediaError as exc:
        raise ExportError(f"verification frames: {exc}") from None


def _install(src: Path, dest: Path) -> None:
    """Move a finished artefact into place; a folder replaces the old one only once complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    apply_file_modes(src)  # the scratch folder is 0700, and files made with mkstemp 0600
    if src.is_dir():
        if dest.exists() and not dest.is_dir():
            raise ExportError(f"{dest} is a file; this format writes a folder there (remove it or choose "
                              "another name)")  # fmt: skip
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if dest.is_dir():
            raise ExportError(f"{dest} is a folder; give a file name for --format with a file output")
        os.replace(src, dest)


@contextlib.contextmanager
def _scratch(dest: Path) -> Iterator[str]:
    """The scratch folder beside `dest`, named with this pid; a write the disk refuses in it is a
    WriteError, seen before the folder's cleanup frees the space."""
    with writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(prefix=f"{EXPORT_TMP_PREFIX}{os.getpid()}-", dir=dest.parent)
    remove_stale_temps(dest.parent)  # scratch folders and temp files of killed exports
    with scratch as tmp, writing(dest):
        yield tmp


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export(model_path: str | Path, fmt_name: str, out: str | Path, options: ExportOptions | None = None,
           model: Any = None) -> ExportResult:  # fmt: skip
    """Export `model_path` (a stylestream model.pt) to `out` in format `fmt_name`.

    Raises ExportError on bad input or a missing dependency, VerificationError (nothing kept) when
    the export is below its PSNR floor, WriteError (nothing kept) when the disk refuses a write. For
    `triton`, `out` is the repository folder."""
    installed: list[Path] = []
    try:
        with writing(out):  # thumbnails and comparison images are written outside the scratch folder
            return _export(model_path, fmt_name, out, options, model, installed)
    except WriteError:
        for path in installed:  # a file without its card must not look like a good export
            _remove(path)
        raise


def _export(model_path: str | Path, fmt_name: str, out: str | Path, options: ExportOptions | None, model: Any,
            installed: list[Path]) -> ExportResult:  # fmt: skip
    t0 = time.perf_counter()
    options = options or ExportOptions()
    fmt = FORMATS[fmt_name]
    model_path, out = Path(model_path), Path(out)
    preflight(fmt, options)
    model = model if model is not None else load_export_model(model_path)
    source_card = dict(getattr(model, "stylestream_card", {}) or {})
    precision = fmt.precision or options.precision

    folder = fmt.is_folder
    if folder:  # OUT is the repository; the artefact is OUT/<name>
        name = safe_name(options.name or base_name(model_path, source_card))
        dest = out / name
    else:
        name = options.name or out.stem
        dest = out

    with _scratch(dest) as tmp:
        workdir = Path(tmp)
        artifact = workdir / (name if folder else f"artifact{fmt.suffix}")
        job = ExportJob(model, model_path, options, workdir, artifact, name)
        fmt.build(job)

        verification: dict[str, Any] | None = None
        arrays = None
        not_run = fmt.not_run_reason(options) if options.verify else None
        if not_run:  # Core ML off macOS: the builder's structural check is all there is; the card says so
            verification = {"skipped": True, "run": False, "floor_db": fmt.floor(precision), "sizes": [],
                            "reason": f"not run here: {not_run}; only its structure was checked (names, "
                                      f"shapes, precision), no PSNR was measured; export on {fmt.runs_on} to "
                                      "verify it"}  # fmt: skip
            log.info("%s export NOT verified: %s", fmt.name, verification["reason"])
        elif options.verify:
            from stylestream.export.verify import save_comparison, verify

            frames, frames_source = _verification_frames(options)
            sizes = [options.static] if options.static else options.verify_sizes
            backend = open_for_verification(fmt, artifact, options)
            try:
                verification = verify(backend, model, frames, sizes, fmt.floor(precision), options.batch)
            finally:
                backend.close()
            verification["images"] = frames_source
            arrays = verification.pop("_arrays")
            _log_verification(fmt.name, verification)
            if not verification["passed"]:
                rejected = dest.with_name(f"{dest.stem if not folder else dest.name}.rejected.png")
                save_comparison(arrays, rejected, f"REJECTED {fmt.name}: {verification['min_psnr_db']} dB "
                                                  f"< floor {verification['floor_db']} dB")  # fmt: skip
                raise VerificationError(
                    f"{fmt.name} export failed verification: PSNR {verification['min_psnr_db']} dB vs PyTorch is "
                    f"below the {verification['floor_db']:g} dB floor for {precision} "
                    f"(per size: {_sizes_text(verification)}); nothing was written except {rejected.name} "
                    "(input | PyTorch | export | diff)",
                    verification,
                )

        for src, to in zip(fmt.files(artifact), fmt.files(dest)):  # the file and its companions (.bin)
            _install(src, to)
            installed.append(to)
        dest.with_name(f"{dest.stem if not folder else dest.name}.rejected.png").unlink(missing_ok=True)

    card_file = card_path(dest) if folder else dest.with_suffix(".json")  # NAME.json beside NAME.mlpackage too
    extras: dict[str, str] = {}
    if arrays is not None:
        from stylestream.export.verify import save_comparison, save_thumbnail

        stem = card_file.with_suffix("") if not folder else dest / name
        if options.thumbnail:
            thumb = Path(f"{stem}.thumb.jpg")
            save_thumbnail(arrays[2][0], thumb)
            extras["thumbnail"] = os.path.relpath(thumb, card_file.parent)
        comparison = Path(f"{stem}.verify.png")
        save_comparison(arrays, comparison, f"{fmt.name}: min PSNR {verification['min_psnr_db']} dB vs PyTorch")
        extras["comparison_image"] = os.path.relpath(comparison, card_file.parent)

    cfg = dict(getattr(model, "stylestream_config", {}))
    title = options.title or source_card.get("title") or name.replace("_", " ").replace("-", " ").title()
    description = options.description or source_card.get("description") or (
        f"{cfg.get('arch', 'style')} network, {fmt.name} ({precision})"
        + (f", style {Path(str(source_card['style'])).name}" if source_card.get("style") else "")
    )
    size_bytes = sum(p.stat().st_size for f in ([dest] if folder else fmt.files(dest))  # a folder: its files
                     for p in (f.rglob("*") if f.is_dir() else [f]) if p.is_file())  # fmt: skip
    card = {
        "name": name, "title": title, "description": description, "thumbnail": extras.get("thumbnail"),
        "format": fmt.name, "precision": precision, "file": dest.name, "file_size_bytes": size_bytes,
        "interface": {"input": "input", "output": "output", "dtype": "float32", "layout": "NCHW",
                      "color": "RGB", "range": [0, 255]},
        "sizes": {"batch": options.batch or "dynamic",
                  "height": options.static[0] if options.static else "dynamic",
                  "width": options.static[1] if options.static else "dynamic",
                  "min_side": 16, "verified": verification["sizes"] if verification else []},
        "verification": verification or {"skipped": True, "reason": "--no-verify"},
        "comparison_image": extras.get("comparison_image"),
        "source": {"model": str(model_path), "architecture": cfg, "card": source_card},
        "opset": job.info.pop("opset", None),  # set when the format was built from ONNX
        **job.info,
    }  # fmt: skip
    from stylestream import __version__

    card["stylestream_version"] = __version__
    write_card(card_file, card)
    return ExportResult(fmt.name, "ok", dest, card_file, verification, seconds=time.perf_counter() - t0,
                        message=f"NOT verified: {verification['reason']}" if not_run else "")  # fmt: skip


def _sizes_text(v: dict[str, Any]) -> str:
    return ", ".join(f"{s['size'][1]}x{s['size'][0]}: {s['psnr_db']} dB (max |err| {s['max_abs_error']})"
                     for s in v["sizes"])  # fmt: skip


def _log_verification(name: str, v: dict[str, Any]) -> None:
    log.info("%s verification on %s via %s: %s -> %s (floor %g dB)", name, v.get("images"), v["runtime"],
             _sizes_text(v), "PASS" if v["passed"] else "FAIL", v["floor_db"])  # fmt: skip


def export_all(model_path: str | Path, out_dir: str | Path, options: ExportOptions | None = None,
               formats: list[str] | None = None) -> list[ExportResult]:  # fmt: skip
    """Every format (or `formats`) into `out_dir`: NAME.onnx, NAME-fp16.onnx, NAME-int8.onnx,
    NAME-trt.engine, NAME-torchscript.torchscript, triton/NAME/. Formats this machine or the
    command cannot do (no GPU, no --calibration) are skipped with the reason; one failure does not
    stop the others."""
    options = options or ExportOptions()
    model_path, out_dir = Path(model_path), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: --format all writes a folder, but this is a file")
    model = load_export_model(model_path)
    stem = options.name or base_name(model_path, dict(getattr(model, "stylestream_card", {}) or {}))
    results = []
    for name in formats or format_names():
        fmt = FORMATS[name]
        out = out_dir / fmt.name if fmt.is_folder else fmt.default_path(out_dir, stem)
        opts = replace(options, name=stem if fmt.is_folder else f"{stem}{fmt.tag}")
        t0 = time.perf_counter()
        try:
            preflight(fmt, opts)
        except ExportError as exc:
            results.append(ExportResult(name, "skipped", message=str(exc)))
            continue
        try:
            results.append(export(model_path, name, out, opts, model=model))
        except ExportError as exc:
            v = exc.verification if isinstance(exc, VerificationError) else None
            results.append(ExportResult(name, "failed", out, verification=v, message=str(exc),
                                        seconds=time.perf_counter() - t0))  # fmt: skip
    return results
