"""The vendor SDK's way to fill a library: a plain sequential loop of `sameHqAdd` over a folder's JPEGs.

    python benchmarks/sdk_add_loop.py GALLERY_URL API_KEY SECRET_KEY FOLDER

Run as a process of its own by bench_latency.py, which times it from outside as it times imgsync (start-up
included). It imports the SDK only (`baidu-aip`), pointed at GALLERY_URL by rewriting its name-mangled URL
attributes (as tests/test_localgallery_sdk.py does). The SDK has no pacing: an add answered error 18 (QPS
limit) is sent again at once, as a plain loop would. Prints one JSON line: added, refused (error 18), seconds
(the loop alone).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

CLOUD = "https://aip.baidubce.com"


def sdk_client(url: str, ak: str, sk: str):  # type: ignore[no-untyped-def]
    from aip import AipImageSearch  # type: ignore[import-untyped]

    client = AipImageSearch("1", ak, sk)
    for name in dir(client):
        value = getattr(client, name, None)
        if name.startswith(("_AipImageSearch__", "_AipBase__")) and isinstance(value, str) and CLOUD in value:
            setattr(client, name, value.replace(CLOUD, url))
    return client


def main(argv: list[str]) -> int:
    url, ak, sk, folder = argv
    client = sdk_client(url, ak, sk)
    added = refused = 0
    t = time.perf_counter()
    for path in sorted(Path(folder).rglob("*.jpg")):
        data = path.read_bytes()
        while True:
            answer = client.sameHqAdd(data, json.dumps({"path": path.name}))
            if answer.get("error_code") in (18, "18"):
                refused += 1
                continue
            if "cont_sign" not in answer:
                print(f"sdk_add_loop: {path.name}: {answer}", file=sys.stderr)
                return 1
            added += 1
            break
    print(json.dumps({"added": added, "refused": refused, "seconds": time.perf_counter() - t}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
