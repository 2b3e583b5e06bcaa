"""Export-format benchmark (same as `stylestream bench export`): size, latency per frame (median of
>= 20 after warm-up) at 320x240, 640x480, 1280x720, and PSNR vs PyTorch FP32; Markdown + JSON.

    python bench/export_formats.py MODEL.pt --calibration ../shared/media/video/webcam_walk.mkv
"""

from __future__ import annotations

import argparse
import logging
import sys

from stylestream import bench_cli

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=bench_cli.DESCRIPTION)
    bench_cli.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(bench_cli.run(parser.parse_args(["export", *sys.argv[1:]])))
