"""Regenerate the sample pseudo-data from the sample specs (reproducible: the specs fix the seeds).

Run with ``make sample-data``. Writes ``closure-1d-small.nc`` (20 000 events per observable),
which ``closure-1d-measured.yaml`` fits as if it were measured data.
"""

from pathlib import Path

from app.cli.commands import main

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    raise SystemExit(main(["data", str(HERE / "closure-1d-small.yaml"), "--out", str(HERE / "closure-1d-small.nc")]))
