"""`mass --config DATA_DIR [--log-level info] [--safe-mode]` (as music_assistant/__main__.py)."""

import argparse
import logging
import os
import sys

from mass_sample_runtime import run  # the [server] extra, like MA's `from aiorun import run`

from mass_sample.server import MusicAssistant

LOG_FMT = "%(asctime)s.%(msecs)03d %(levelname)s (%(threadName)s) [%(name)s] %(message)s"
# colorlog's ColoredFormatter colours stderr even when it is not a terminal (the journal).
COLORS = {"DEBUG": "\x1b[36m", "INFO": "\x1b[32m", "WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[31m"}


class ColoredFormatter(logging.Formatter):
    def format(self, record):
        return COLORS.get(record.levelname, "") + super().format(record) + "\x1b[0m"


def get_arguments(argv=None):
    parser = argparse.ArgumentParser(description="MusicAssistant")
    parser.add_argument("-c", "--config", default=os.path.join(os.path.expanduser("~"), ".musicassistant"))
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    parser.add_argument("--safe-mode", action=argparse.BooleanOptionalAction)
    return parser.parse_args(argv)


def setup_logger(data_dir: str, level: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger().handlers[0].setFormatter(ColoredFormatter(LOG_FMT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler = logging.FileHandler(os.path.join(data_dir, "musicassistant.log"))
    handler.setFormatter(logging.Formatter(LOG_FMT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("music_assistant").setLevel(level.upper())


def main(argv=None) -> None:
    args = get_arguments(argv)
    if not os.path.isdir(args.config):
        os.makedirs(args.config)
    setup_logger(args.config, args.log_level)
    mass = MusicAssistant(args.config)
    run(mass.start(), shutdown_callback=lambda loop: None)


if __name__ == "__main__":
    main()
