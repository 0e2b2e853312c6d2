"""Download one source distribution from the package index and check its sha256.

Usage: python fetch_sdist.py NAME==VERSION SHA256 DEST_DIR

Used for pb1-detectron2, whose metadata declares a direct-URL extra that makes
`pip download` refuse it. The archive is unpacked into DEST_DIR.
"""
import hashlib
import os
import re
import sys
import tarfile
import urllib.parse
import urllib.request


def main() -> None:
    spec, sha256, dest = sys.argv[1:4]
    name, version = spec.split("==")
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    page_url = f"{index}/{name}/"
    with urllib.request.urlopen(page_url, timeout=120) as r:
        page = r.read().decode()
    fname = f"{name}-{version}.tar.gz"
    links = re.findall(r'href="([^"]+)"', page)
    matches = [u for u in links if u.split("#")[0].endswith("/" + fname)]
    if not matches:
        raise SystemExit(f"{fname} not found on {page_url}")
    url = matches[0].split("#")[0]
    url = urllib.parse.urljoin(page_url, url)
    path = os.path.join(dest, fname)
    print("downloading", url)
    with urllib.request.urlopen(url, timeout=300) as r, open(path, "wb") as f:
        f.write(r.read())
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"sha256 mismatch for {fname}: got {digest}, expected {sha256}")
    with tarfile.open(path) as tar:
        tar.extractall(dest, filter="data")
    print("unpacked into", dest)


if __name__ == "__main__":
    main()
