#!/usr/bin/env python3
"""`make sam-build`'s size check: zips each function's `bootstrap` in a `sam build`
output directory the way a deployment does (deflate) and fails if one is not under the
budget (bytes).

usage: sam_sizes.py BUILD_DIR LIMIT_BYTES
"""

import io
import sys
import zipfile
from pathlib import Path


def zipped_size(bootstrap: Path) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(bootstrap, "bootstrap")
    return buf.getbuffer().nbytes


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    build, limit = Path(argv[1]), int(argv[2])
    found = sorted(build.glob("*/bootstrap"))
    if not found:
        print(f"no */bootstrap under {build}: did sam build run?", file=sys.stderr)
        return 1
    status = 0
    for bootstrap in found:
        size = zipped_size(bootstrap)
        raw = bootstrap.stat().st_size
        print(f"{bootstrap.parent.name:<24} {raw:>10} bytes  {size:>9} bytes zipped")
        if size >= limit:
            print(f"{bootstrap.parent.name}: zipped bootstrap over the {limit}-byte budget",
                  file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
