"""A CRS release archive built from the shared CRS v4 checkout and served on 127.0.0.1, as
GitHub serves a release: what `rules update --crs` and the image's build fetch in tests."""
from __future__ import annotations

import contextlib
import gzip
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path


def archive(crs_dir: Path, version: str) -> bytes:
    """The same bytes on every call (gzip's header time fixed), as a published archive is."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted((crs_dir / "rules").iterdir()):
            tar.add(path, arcname=f"coreruleset-{version}/rules/{path.name}")
        tar.add(crs_dir / "LICENSE", arcname=f"coreruleset-{version}/LICENSE")
    return gzip.compress(buffer.getvalue(), mtime=0)


@contextlib.contextmanager
def serve(files: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """(``http://127.0.0.1:PORT``, the paths requested so far) while ``files`` (path -> body) are served."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):   # noqa: N802 - http.server's name
            requests.append(self.path)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()
