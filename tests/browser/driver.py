"""Drives headless Chromium against a real mcpport gateway, with nothing but the standard library:
the DevTools protocol over --remote-debugging-pipe (NUL-separated JSON on file descriptors 3 and 4).

Starts, each on 127.0.0.1 with a port the OS picks: a gateway, the built-in sample server
registered through `mcpport register`, and a small HTTP server for cross-origin pages. Checks:
  status-page     the page at / lists the live server (name, ready, tool count)
  tool-call       sample_echo picked from the page, its argument filled in its form, called
                  through /mcp; the JSON-RPC answer shown on the page carries the text
  cors-allowed    a page on an --allow-origin origin initializes and lists tools via CORS
  cors-refused    a page on another origin cannot (its fetch fails)
  token-page      a gateway with --auth-token: the page asks for the token, then shows the
                  servers and calls a tool with it
Names other than loopback ones (app.test, evil.test) are mapped to 127.0.0.1 inside Chromium
(--host-resolver-rules), since loopback origins are always allowed. Everything it starts is
stopped by PID (Chromium by its own process group) on the way out; every wait has a deadline.

Usage: python3 driver.py MCPPORT_BIN CHROMIUM OUT_DIR
(OUT_DIR gets the logs of everything started, the pages' console, and screenshots.)
Prints one line per check and a closing 'N passed, N failed'; exit status 1 if any failed.
"""

import base64
import fcntl
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

WAIT = 20  # seconds any one expectation may take
TOTAL = 240  # seconds for the whole run


class Failed(Exception):
    pass


def wait_until(what, check, limit=WAIT, every=0.1):
    """Calls check() until it returns something truthy, at most `limit` seconds."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Failed:
            raise
        except Exception as e:  # the page may not be there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise Failed(f"gave up after {limit} s waiting for {what} (last: {last!r})")


# ---- processes ----

class Procs:
    """What this run started, stopped newest first by PID (or by the group it leads)."""

    def __init__(self):
        self.started = []

    def start(self, args, log, group=False, **kw):
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=group, **kw)
        self.started.append((p, group))
        return p

    def stop_all(self):
        for p, group in reversed(self.started):
            stop(p, group)
        self.started = []


def stop(p, group):
    if p.poll() is not None:
        return
    kill = (lambda s: os.killpg(p.pid, s)) if group else p.send_signal
    try:
        kill(signal.SIGTERM)
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        kill(signal.SIGKILL)
        p.wait(timeout=5)
    except ProcessLookupError:
        pass


class Gateway:
    def __init__(self, procs, binary, out, name, extra):
        self.log_path = os.path.join(out, f"{name}-gateway.log")
        args = [binary, "gateway", "--host", "127.0.0.1", "--port", "0"] + extra
        self.proc = procs.start(args, open(self.log_path, "w"))
        line = wait_until("the gateway to listen", lambda: self._listening())
        self.port = int(line.split("listening on http://127.0.0.1:")[1].split()[0])
        self.url = f"http://127.0.0.1:{self.port}"

    def _listening(self):
        if self.proc.poll() is not None:
            raise Failed(f"the gateway exited; see {self.log_path}")
        with open(self.log_path) as f:
            return next((l for l in f if "listening on http://127.0.0.1:" in l), None)

    def status(self, token=None):
        req = urllib.request.Request(self.url + "/status.json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)


def register(procs, binary, gw, out, name, token=None):
    args = [binary, "register", "--stdio", f"{binary} sample-server --test-tools", "--gateway-url",
            f"ws://127.0.0.1:{gw.port}/mcp/register", "--server-name", name]
    if token:
        args += ["--header", f"Authorization: Bearer {token}"]
    procs.start(args, open(gw.log_path.replace("-gateway.log", f"-{name}-register.log"), "w"))
    wait_until(f"{name} to be registered and ready",
               lambda: any(s["name"] == name and s["ready"] for s in gw.status(token)["servers"]))


def serve_pages(directory):
    """An HTTP server for the cross-origin pages, on its own thread; returns (server, port)."""

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=directory, **kw)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


# ---- the DevTools protocol over a pipe ----

class Browser:
    def __init__(self, procs, chromium, out, resolver_rules):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # Copies above 9, out of the way, so the child can move them to 3 and 4.
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)

        def fds():
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--password-store=basic", "--use-mock-keychain",
                f"--user-data-dir={os.path.join(out, 'profile')}",
                f"--host-resolver-rules={resolver_rules}", "about:blank"]
        self.proc = procs.start(args, open(os.path.join(out, "chromium.log"), "w"), group=True,
                                preexec_fn=fds, close_fds=False)
        for fd in (to_chrome_r, from_chrome_w, a, b):
            os.close(fd)
        self.next_id = 0
        self.answers = {}
        self.cond = threading.Condition()
        self.console = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.from_chrome, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self.cond:
                    self.answers[None] = "closed"
                    self.cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self.cond:
                        self.answers[msg["id"]] = msg
                        self.cond.notify_all()
                elif msg.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown"):
                    self.console.put(msg["params"])

    def send(self, method, params=None, session=None, limit=WAIT):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + limit
        with self.cond:
            while self.next_id not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0 or None in self.answers:
                    raise Failed(f"no answer from Chromium to {method}")
                self.cond.wait(left)
            answer = self.answers.pop(self.next_id)
        if "error" in answer:
            raise Failed(f"{method}: {answer['error']}")
        return answer["result"]

    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self.send("Runtime.enable", session=session)
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        return page

    def save_console(self, path):
        """Writes what the pages logged and threw (for a failed run's post-mortem)."""
        with open(path, "w") as f:
            while not self.console.empty():
                f.write(json.dumps(self.console.get()) + "\n")

    def close(self):
        try:
            self.send("Browser.close", limit=5)
        except Failed:
            pass


class Page:
    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    def eval(self, expression):
        """The value of a JavaScript expression (a promise is awaited)."""
        r = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"].get("exception", {}).get("description", r["exceptionDetails"]))
        return r["result"].get("value")

    def screenshot(self, path):
        data = self.browser.send("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


# ---- the checks ----

SERVER_ROWS = "[...document.querySelectorAll('#servers tr')].map(r => [...r.cells].map(c => c.textContent))"


def check_status_page(page, name):
    rows = wait_until("the page to list the server",
                      lambda: [r for r in page.eval(SERVER_ROWS) if r and r[0] == name])
    row = rows[0]
    if row[6] != "yes" or int(row[7]) < 3 or not row[3].startswith("127.0.0.1:") or "#" not in row[1] or row[2] != "stdio":
        raise Failed(f"the server's row is wrong: {row}")
    return f"row {row[:8]}"


def call_on_page(page, tool, field, kind, value):
    """Picks `tool`, fills its one argument `field` (whose input must be of `kind`), calls it, and
    returns the JSON-RPC answer the page shows."""
    index = wait_until(f"{tool} in the tool list", lambda: page.eval(
        f"(() => {{ const o = [...document.querySelectorAll('#tool option')].find(o => o.textContent === {json.dumps(tool)});"
        " return o ? o.value : null })()"))
    page.eval(f"(() => {{ const s = document.getElementById('tool'); s.value = {json.dumps(index)};"
              " s.dispatchEvent(new Event('change')); document.getElementById('result').className = ''; })()")
    field_js = f"document.querySelector('#args [name={field}]')"
    got_kind = wait_until("the argument form", lambda: page.eval(f"{field_js} && {field_js}.type"))
    if got_kind != kind:
        raise Failed(f"{tool}'s {field} is a {got_kind!r} field, not {kind!r}")
    page.eval(f"{field_js}.value = {json.dumps(value)}; document.getElementById('call').click()")
    shown = wait_until("the call's answer on the page", lambda: page.eval(
        "(() => { const r = document.getElementById('result');"
        " return r.className ? [r.className, r.textContent, r.children.length] : null })()"))
    if shown[0] != "ok":
        raise Failed(f"the call failed on the page: {shown[1][:500]}")
    if shown[2]:
        raise Failed("the answer was inserted as markup, not text")
    return json.loads(shown[1])


def check_tool_call(page, tool, text):
    answer = call_on_page(page, tool, "text", "text", text)
    got = answer["result"]["content"][0]["text"]
    if got != text:
        raise Failed(f"echo answered {got!r}, not {text!r}")
    # The server's request counter moves on the live page.
    wait_until("the request count to move", lambda: any(
        r and r[0] == tool.split("_")[0] and int(r[10]) >= 1 for r in page.eval(SERVER_ROWS)), limit=10)
    sleep = call_on_page(page, "sample_sleep", "seconds", "number", "0.2")
    if sleep["result"].get("isError"):
        raise Failed(f"sleep with a number from its form failed: {sleep}")
    return f"answer id {answer['id']}, text {got!r} (as text, not markup); sample_sleep with a number field"


def check_connect(page, gateway, name):
    """The page says where clients and edges connect, with snippets for the usual clients, and
    each server's identity and tool names."""
    text = wait_until("the connect section", lambda: page.eval("document.getElementById('connect').textContent"))
    wanted = [f"{gateway.url}/mcp", f"{gateway.url}/sse", f"ws://127.0.0.1:{gateway.port}/mcp/register",
              "mcp-remote", "--allow-http", '"type": "http"', "mcpServers", "Claude Desktop", "Cursor", "VS Code"]
    missing = [w for w in wanted if w not in text]
    if missing:
        raise Failed(f"the connect section lacks {missing}: {text[:600]}")
    row = next(r for r in page.eval(SERVER_ROWS) if r and r[0] == name)
    if "mcpport-sample" not in row[13] or f"{name}_echo" not in row[14]:
        raise Failed(f"the server's identity or tool names are missing: {row[13:]}")
    return f"{len(wanted)} pieces, server {row[13]!r}, tools {row[14][:40]!r}…"


def check_image(page, name):
    """A tool's image comes out as an image (and its sound as a player), not as base64 text."""
    tool = f"{name}_image"
    index = wait_until(f"{tool} in the tool list", lambda: page.eval(
        f"(() => {{ const o = [...document.querySelectorAll('#tool option')].find(o => o.textContent === {json.dumps(tool)});"
        " return o ? o.value : null })()"))
    page.eval(f"(() => {{ const s = document.getElementById('tool'); s.value = {json.dumps(index)};"
              " s.dispatchEvent(new Event('change')); document.getElementById('call').click() })()")
    shown = wait_until("the image on the page", lambda: page.eval(
        "(() => { const i = document.querySelector('#media img'), a = document.querySelector('#media audio');"
        " return i && i.complete && a ? [i.naturalWidth, i.src.slice(0, 22), a.src.slice(0, 16),"
        " document.getElementById('result').textContent] : null })()"))
    width, image_src, audio_src, text = shown
    if width < 1 or image_src != "data:image/png;base64," or not audio_src.startswith("data:audio/"):
        raise Failed(f"the image or sound is not shown: {shown[:3]}")
    answer = json.loads(text)
    kinds = [c.get("type") for c in answer["result"]["content"]]
    if "image" not in kinds or "audio" not in kinds:
        raise Failed(f"the result shown beside them is not the call's: {kinds}")
    return f"an image {width} px wide and an audio player beside the result's text"



CROSS_ORIGIN_PAGE = """<!doctype html><meta charset=utf-8><title>cross-origin MCP client</title>
<script>
// Initializes and lists tools on the gateway named in the fragment, cross-origin (CORS).
window.outcome = (async () => {
  const url = decodeURIComponent(location.hash.slice(1));
  const headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"};
  try {
    let r = await fetch(url, {method: "POST", headers, body: JSON.stringify({jsonrpc: "2.0", id: 1,
      method: "initialize", params: {protocolVersion: "2025-11-25", capabilities: {},
      clientInfo: {name: "cross-origin-page", version: "1"}}})});
    const sid = r.headers.get("Mcp-Session-Id");
    const init = await r.json();
    const h = Object.assign({"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}, headers);
    r = await fetch(url, {method: "POST", headers: h, body: JSON.stringify({jsonrpc: "2.0", method: "notifications/initialized"})});
    if (r.status !== 202) return {error: "initialized: HTTP " + r.status};
    r = await fetch(url, {method: "POST", headers: h, body: JSON.stringify({jsonrpc: "2.0", id: 2, method: "tools/list"})});
    const list = await r.json();
    return {sid, server: init.result.serverInfo.name, tools: list.result.tools.map(t => t.name)};
  } catch (e) {
    return {error: String(e)};
  }
})();
</script>
"""


def check_cross_origin(browser, origin, gateway, expect_ok):
    page = browser.open(f"{origin}/cross.html#{gateway.url}/mcp")
    outcome = wait_until("the cross-origin page's outcome", lambda: page.eval(
        "window.outcome ? window.outcome : null"))
    if expect_ok:
        if "error" in outcome or "sample_echo" not in outcome.get("tools", []) or not outcome.get("sid"):
            raise Failed(f"the allowed origin could not use /mcp: {outcome}")
        return f"session {outcome['sid'][:8]}…, {len(outcome['tools'])} tools"
    if "error" not in outcome or "Failed to fetch" not in outcome["error"]:
        raise Failed(f"the refused origin got through: {outcome}")
    with open(gateway.log_path) as f:
        if not any("is not allowed" in l and origin in l for l in f):
            raise Failed("the gateway did not log the refused Origin")
    return f"fetch failed ({outcome['error']}), gateway logged the 403"


def check_token_page(page, token):
    wait_until("the page to ask for a token", lambda: page.eval(
        "getComputedStyle(document.getElementById('auth')).display !== 'none'"
        " && document.getElementById('msg').textContent.includes('token')"))
    if page.eval("document.body.textContent.includes('sample')"):
        raise Failed("the page shows a server name before the token is given")
    page.eval(f"document.getElementById('token').value = {json.dumps(token)};"
              " document.querySelector('#auth button').click()")
    return "asked, then " + check_status_page(page, "sample")


def too_long(*_):
    raise Failed(f"the run took over {TOTAL} s")


def main():
    binary, chromium, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(TOTAL)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Procs()
    results = []

    def check(name, fn, *args):
        t0 = time.monotonic()
        try:
            detail = fn(*args)
            results.append(True)
            print(f"browser-test: ok   {name} ({time.monotonic() - t0:.1f} s): {detail}", flush=True)
        except Exception as e:
            results.append(False)
            print(f"browser-test: FAIL {name} ({time.monotonic() - t0:.1f} s): {e}", flush=True)

    try:
        pages = os.path.join(out, "pages")
        os.makedirs(pages, exist_ok=True)
        with open(os.path.join(pages, "cross.html"), "w") as f:
            f.write(CROSS_ORIGIN_PAGE)
        server, pages_port = serve_pages(pages)
        allowed, refused = f"http://app.test:{pages_port}", f"http://evil.test:{pages_port}"

        gw = Gateway(procs, binary, out, "open", ["--allow-origin", allowed])
        register(procs, binary, gw, out, "sample")
        browser = Browser(procs, chromium, out, "MAP app.test 127.0.0.1, MAP evil.test 127.0.0.1")
        page = browser.open(gw.url + "/")
        check("status-page", check_status_page, page, "sample")
        check("tool-call", check_tool_call, page, "sample_echo", "hello from chromium <b>&</b>")
        check("connect", check_connect, page, gw, "sample")
        check("image", check_image, page, "sample")
        page.screenshot(os.path.join(out, "status-page.png"))
        check("cors-allowed", check_cross_origin, browser, allowed, gw, True)
        check("cors-refused", check_cross_origin, browser, refused, gw, False)

        locked = Gateway(procs, binary, out, "token", ["--auth-token", "browser-secret"])
        register(procs, binary, locked, out, "sample", token="browser-secret")
        page = browser.open(locked.url + "/")
        check("token-page", check_token_page, page, "browser-secret")
        check("token-tool-call", check_tool_call, page, "sample_echo", "with a token")
        page.screenshot(os.path.join(out, "token-page.png"))
        browser.save_console(os.path.join(out, "console.log"))
        browser.close()
        server.shutdown()
    except Exception as e:
        results.append(False)
        print(f"browser-test: FAIL setup: {e}", flush=True)
    finally:
        signal.alarm(0)
        procs.stop_all()
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
