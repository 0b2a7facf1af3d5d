#!/usr/bin/env python3
"""Serves www/ on 127.0.0.1 for development (./build.sh runs it):

    python3 www-server.py [PORT [ROOT]]     (ROOT: www/ beside this file unless given; the tests
                                            give another)

Beyond a plain static server: the wasm MIME type, cross-origin isolation (lets the page measure
its memory and the workers share memory between threads), and the page's Content-Security-Policy
as a header as well as in its meta tag, since only a header binds the workers. Nothing outside
the root is served, through '..' (however it is encoded) or through a symbolic link.
"""
import http.server
import pathlib
import re
import sys


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
        if not pathlib.Path(self.translate_path(self.path)).resolve().is_relative_to(self.root):
            self.send_error(404, "not found")
            return None
        return super().send_head()

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
