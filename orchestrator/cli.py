"""`python -m orchestrator.cli "some text" ...`: labels and scores in the terminal.

With no text arguments it reads one text per line from stdin, sending them in batches."""

import argparse
import os
import sys
from collections.abc import Iterator

import httpx

BATCH = 64


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator.cli", description=__doc__)
    p.add_argument("texts", nargs="*", help="texts to classify (default: lines of stdin)")
    p.add_argument("--url", default=os.environ.get("ORCHESTRATOR_URL", "http://127.0.0.1:8080"))
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument(
        "--head", help="the head to ask (default: the orchestrator's default head; GET /v1/heads lists them)"
    )
    return p


def _batches(texts: list[str]) -> Iterator[list[str]]:
    source = texts or (line.rstrip("\n") for line in sys.stdin)
    batch: list[str] = []
    for text in source:
        if text.strip():
            batch.append(text)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def main() -> int:
    args = _parser().parse_args()
    with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
        for batch in _batches(args.texts):
            try:
                body = {"texts": batch} if args.head is None else {"texts": batch, "head": args.head}
                response = client.post("/classify", json=body)
            except httpx.HTTPError as exc:
                print(f"error: cannot reach the orchestrator at {args.url}: {exc}", file=sys.stderr)
                return 2
            if response.status_code != 200:
                try:
                    message = response.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = response.text[:500]
                print(f"error {response.status_code}: {message}", file=sys.stderr)
                return 1
            for text, prediction in zip(batch, response.json()["predictions"], strict=True):
                scores = "  ".join(f"{label}={score:.3f}" for label, score in prediction["scores"].items())
                print(f"{prediction['label']:<10} {prediction['score']:.3f}  [{scores}]  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
