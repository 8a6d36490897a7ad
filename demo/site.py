"""A small site served on loopback: pages, a redirect chain, a slow page, a 500 and a 404,
a form to drive with steps, a cookie login (`/login?user=NAME` then `/me`) and `/env`, which
shows what the browser says about itself (user agent, language, time zone, viewport, position).

Threaded stdlib HTTP server, so it needs nothing installed and serves many browsers at once.
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_STYLE = "body{font-family:sans-serif;max-width:40rem;margin:2rem auto}"


def _page(title: str, body: str, *, head: str = "") -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"{head}<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{title}</h1>{body}</body></html>"
    ).encode()


PAGES = {
    "/": _page(
        "Smartfleet demo",
        "<p id=intro>A demo site for Smartfleet runs.</p><ul>"
        '<li><a href="/about">About</a></li><li><a href="/products">Products</a></li>'
        '<li><a href="/slow">Slow page</a></li></ul>',
    ),
    "/about": _page("About", "<p id=about>Served on loopback for demos and tests.</p>"),
    # A page that logs a console error and throws an uncaught one (the console-error measurement).
    "/console-error": _page(
        "Console error",
        "<p id=console>This page logs an error and throws another.</p>"
        '<script>console.error("demo error"); throw new Error("demo uncaught error");</script>',
    ),
    "/products": _page(
        "Products",
        "<ul id=products>"
        + "".join(f'<li class=product data-sku="sku-{n}">Product {n}</li>' for n in range(1, 6))
        + "</ul>",
    ),
}

# The newer pages lay out for the device's width, as mobile-friendly sites do.
_MOBILE = '<meta name=viewport content="width=device-width, initial-scale=1">'

# Everything interactive on one page: each control writes what happened into the page, so steps
# can check it with `extract` or `assert`.
FORM_PAGE = _page(
    "Form",
    """<form id=form onsubmit="return false">
<label>Name <input id=name name=name autocomplete=off></label>
<label>Colour <select id=colour name=colour>
<option value=red>Red</option><option value=green>Green</option><option value=blue>Blue</option>
</select></label>
<button id=greet type=button>Greet</button>
</form>
<p>Name: <span id=name-echo></span></p>
<p>Colour: <span id=colour-echo>red</span></p>
<p>Last key: <span id=last-key></span></p>
<p id=greeting></p>
<p><span id=hover-target>Hover over me</span> <span id=hover-reveal hidden>Revealed by hover</span></p>
<p id=late-slot></p>
<p>Scrolled: <span id=scroll-pos>0</span> <span id=scroll-end></span></p>
<div id=middle style="margin-top:1500px">The middle of the page</div>
<div style="height:2500px"></div>
<div id=bottom>The bottom of the page</div>
<script>
const $ = (id) => document.getElementById(id);
$("name").addEventListener("input", () => { $("name-echo").textContent = $("name").value; });
$("colour").addEventListener("change", () => { $("colour-echo").textContent = $("colour").value; });
document.addEventListener("keydown", (e) => { $("last-key").textContent = e.key; });
$("greet").addEventListener("click", () => {
  $("greeting").textContent = `Hello, ${$("name").value || "stranger"} (${$("colour").value})!`;
});
$("hover-target").addEventListener("mouseenter", () => { $("hover-reveal").hidden = false; });
setTimeout(() => { $("late-slot").innerHTML = "<span id=late>Arrived late</span>"; }, 300);
addEventListener("scroll", () => {
  $("scroll-pos").textContent = String(Math.round(scrollY));
  const end = innerHeight + scrollY >= document.documentElement.scrollHeight - 2;
  $("scroll-end").textContent = end ? "reached the bottom" : "";
});
</script>""",
    head=_MOBILE,
)

ENV_PAGE = _page(
    "Environment",
    """<dl>
<dt>User agent</dt><dd id=ua></dd>
<dt>Language</dt><dd id=lang></dd>
<dt>Time zone</dt><dd id=tz></dd>
<dt>Viewport</dt><dd id=viewport></dd>
<dt>Touch points</dt><dd id=touch></dd>
<dt>Position</dt><dd id=geo>unknown</dd>
</dl>
<script>
const put = (id, value) => { document.getElementById(id).textContent = value; };
put("ua", navigator.userAgent);
put("lang", navigator.language);
put("tz", Intl.DateTimeFormat().resolvedOptions().timeZone);
put("viewport", `${innerWidth}x${innerHeight}@${devicePixelRatio}`);
put("touch", String(navigator.maxTouchPoints));
navigator.geolocation.getCurrentPosition(
  (p) => put("geo", `${p.coords.latitude.toFixed(2)},${p.coords.longitude.toFixed(2)}`),
  (e) => put("geo", `denied: ${e.message}`),
);
</script>""",
    head=_MOBILE,
)

# path -> where it redirects
REDIRECTS = {"/redirect": "/", "/redirect-chain": "/redirect", "/old-about": "/about"}


class _Handler(BaseHTTPRequestHandler):
    server_version = "SmartfleetDemo/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: tests and demos make thousands of requests

    def _send(self, status: int, body: bytes, *, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        site: DemoSite = self.server.site  # type: ignore[attr-defined]
        site.record(
            parts.path, self.headers.get("User-Agent", ""), self.headers.get("X-Smartfleet-Run", "")
        )
        if parts.path in PAGES:
            self._send(HTTPStatus.OK, PAGES[parts.path])
        elif parts.path in REDIRECTS:
            self._send(HTTPStatus.FOUND, b"", headers={"Location": REDIRECTS[parts.path]})
        elif parts.path == "/slow":
            delay_ms = min(int(query.get("ms", ["1500"])[0] or 0), 60_000)
            time.sleep(delay_ms / 1000)
            self._send(
                HTTPStatus.OK, _page("Slow page", f"<p id=slow>Answered after {delay_ms} ms.</p>")
            )
        elif parts.path == "/error":
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR, _page("Server error", "<p>Something broke.</p>")
            )
        elif parts.path == "/form":
            self._send(HTTPStatus.OK, FORM_PAGE)
        elif parts.path == "/env":
            self._send(HTTPStatus.OK, ENV_PAGE)
        elif parts.path == "/login":
            self._login(query.get("user", [""])[0])
        elif parts.path == "/me":
            self._me()
        elif parts.path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"")
        else:
            self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<p>No such page.</p>"))

    def _login(self, user: str) -> None:
        """Sign in as `user` (any name, no password: a demo) and go to /me."""
        name = "".join(ch for ch in user if ch.isalnum() or ch in "-_.")[:64]
        if not name:
            self._send(HTTPStatus.BAD_REQUEST, _page("Login", "<p>Say who: /login?user=NAME</p>"))
            return
        self._send(
            HTTPStatus.FOUND,
            b"",
            headers={"Location": "/me", "Set-Cookie": f"session={name}; Path=/; SameSite=Lax"},
        )

    def _me(self) -> None:
        cookies = SimpleCookie()
        with contextlib.suppress(CookieError):
            cookies.load(self.headers.get("Cookie", ""))
        morsel = cookies.get("session")
        who = (
            f"signed in as {html.escape(morsel.value)}" if morsel and morsel.value else "anonymous"
        )
        self._send(HTTPStatus.OK, _page("Me", f"<p id=who>{who}</p>"))


class DemoSite:
    """Serves the demo pages on `host:port` (port 0 picks a free one) in a background thread."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.site = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.user_agents: set[str] = set()
        self.run_headers: set[str] = set()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(self, path: str, user_agent: str, run_header: str) -> None:
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            self.user_agents.add(user_agent)
            if run_header:
                self.run_headers.add(run_header)

    def start(self) -> DemoSite:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-site", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> DemoSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(host: str = "127.0.0.1", port: int = 8080) -> None:
    site = DemoSite(host=host, port=port).start()
    print(f"demo site on {site.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
