"""`python -m head_service`: `tensorflow_model_server` when it is on PATH, else the stand-in, with the same flags."""

import asyncio
import logging
import os
import shutil
import sys

from service_common.logs import configure_logging, tensorflow_banner_dropped
from service_common.tracing import setup_tracing

BINARY = "tensorflow_model_server"


def _binary_argv(argv: list[str], stand_in_only: tuple[str, ...]) -> list[str]:
    """The real server's arguments: ours without the stand-in-only flags (`--host x` or `--host=x`), and
    with REST on 8501 unless asked otherwise, as the stand-in does (the binary alone defaults to no REST)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in stand_in_only:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in stand_in_only)):
            kept.append(arg)
    if not any(arg == "--rest_api_port" or arg.startswith("--rest_api_port=") for arg in kept):
        kept.append("--rest_api_port=8501")
    return kept


def main() -> None:
    argv = sys.argv[1:]
    configure_logging("info", None)
    with tensorflow_banner_dropped():  # the flags' protos and the stand-in load TensorFlow
        from head_service.options import STAND_IN_ONLY_FLAGS, parse
        from head_service.server import serve
    options = parse(argv)
    binary = shutil.which(BINARY)
    if binary is not None:
        os.execv(binary, [binary, *_binary_argv(argv, STAND_IN_ONLY_FLAGS)])
    logging.getLogger(__name__).info("%s not on PATH: serving with the stand-in", BINARY)
    stop_tracing = setup_tracing("head")  # the stand-in's own spans; TF Serving has none
    try:
        asyncio.run(serve(options))
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
