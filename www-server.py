#!/usr/bin/env python3
"""Serves www/ on 127.0.0.1 for development (./build.sh runs it):

    python3 www-server.py [PORT [ROOT]]     (ROOT: www/ beside this file unless given; the tests
                                            give another)

Beyond a plain static server: the wasm MIME type, cross-origin isolation (lets the page measure
its memory and the workers share memory between threads), and the page's Content-Security-Policy
as a header as well as in its meta tag, since only a header binds the workers. Text, wasm and
model files go out gzip-compressed where the browser accepts it, as a static host sends them,
with an ETag, so that revalidating an unchanged file costs a 304. Nothing outside the root is
served, through '..' (however it is encoded) or through a symbolic link.
"""
import functools
import gzip
import http.server
import io
import pathlib
import re
import sys

COMPRESSIBLE = {".html", ".js", ".mjs", ".css", ".json", ".svg", ".wasm", ".safetensors", ".bin"}


@functools.lru_cache(maxsize=64)
def gzipped(path, mtime_ns, size):
    """The file at `path` gzip-compressed; `mtime_ns` and `size` key the cache to its version."""
    return gzip.compress(pathlib.Path(path).read_bytes(), compresslevel=9, mtime=0)


def accepts_gzip(accept_encoding):
    for part in (accept_encoding or "").split(","):
        name, *parameters = [piece.strip() for piece in part.split(";")]
        if name == "gzip":
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in parameters)
    return False


def page_policy(root):
    html = (root / "index.html").read_text(encoding="utf-8")
    match = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    if not match:
        sys.exit(f"{root / 'index.html'} has no Content-Security-Policy meta tag to serve as a header")
    return match.group(1)


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}
    root = None
    policy = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(self.root), **kwargs)

    def send_head(self):
        # translate_path already drops '..' segments; a symbolic link could still lead out.
        path = pathlib.Path(self.translate_path(self.path))
        if not path.resolve().is_relative_to(self.root):
            self.send_error(404, "not found")
            return None
        if path.is_dir() and self.path.split("?")[0].endswith("/"):
            path = path / "index.html"
        if path.suffix in COMPRESSIBLE and path.is_file() and accepts_gzip(self.headers.get("Accept-Encoding")):
            return self.send_gzipped(path)
        return super().send_head()

    def send_gzipped(self, path):
        stat = path.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}-gzip"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Vary", "Accept-Encoding")
            self.end_headers()
            return None
        body = gzipped(str(path), stat.st_mtime_ns, stat.st_size)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Last-Modified", self.date_time_string(stat.st_mtime))
        self.end_headers()
        return io.BytesIO(body)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Content-Security-Policy", self.policy)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    default_root = pathlib.Path(__file__).resolve().parent / "www"
    Handler.root = pathlib.Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else default_root
    Handler.policy = page_policy(Handler.root)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
