"""A loopback stand-in for the arXiv API and its PDF links, speaking the real Atom format
(see https://info.arxiv.org/help/api/user-manual.html), with paging, sorting and fault injection."""

import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

from helpers import Loopback


@dataclass
class FakePaper:
    id: str  # versionless, e.g. "2401.00001" or "cs/0112017"
    title: str
    categories: list[str]
    published: str  # ISO timestamp; newest first when sorted by submittedDate
    pdf: bytes
    content_type: str = "application/pdf"
    version: int = 1
    authors: list[str] = field(default_factory=lambda: ["Ada Lovelace", "Alan Turing"])
    stall_s: float = 0.0  # the PDF server accepts the connection, then says nothing for this long
    trickle_s: float = 0.0  # the PDF server sends its body one byte every trickle_s seconds


def _entry(paper: FakePaper, base: str) -> str:
    authors = "".join(f"<author><name>{escape(a)}</name></author>" for a in paper.authors)
    categories = "".join(f'<category term="{c}" scheme="http://arxiv.org/schemas/atom"/>' for c in paper.categories)
    versioned = f"{paper.id}v{paper.version}"
    return f"""<entry>
    <id>http://arxiv.org/abs/{versioned}</id>
    <updated>{paper.published}</updated>
    <published>{paper.published}</published>
    <title>{escape(paper.title)}</title>
    <summary>  We study {escape(paper.title.lower())}. It is simple and fast.
</summary>
    {authors}
    <link href="http://arxiv.org/abs/{versioned}" rel="alternate" type="text/html"/>
    <link title="pdf" href="{base}/pdf/{versioned}" rel="related" type="application/pdf"/>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="{paper.categories[0]}"
      scheme="http://arxiv.org/schemas/atom"/>
    {categories}
  </entry>"""


def atom_feed(papers: list[FakePaper], total: int, start: int, base: str) -> str:
    entries = "\n  ".join(_entry(p, base) for p in papers)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <link href="http://arxiv.org/api/query" rel="self" type="application/atom+xml"/>
  <title type="html">ArXiv Query</title>
  <id>http://arxiv.org/api/fake</id>
  <updated>2024-10-01T00:00:00-04:00</updated>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{total}</opensearch:totalResults>
  <opensearch:startIndex xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{start}</opensearch:startIndex>
  <opensearch:itemsPerPage xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{len(papers)}</opensearch:itemsPerPage>
  {entries}
</feed>
"""


class FakeArxiv(Loopback):
    """Serve `papers`; `api_faults` is a queue of HTTP statuses the next API requests answer with."""

    def __init__(self, papers: list[FakePaper]):
        self.papers = papers
        self.api_faults: list[int] = []
        self.failing_categories: set[str] = set()  # these category queries answer 503, every time
        self.html_feed = False  # the API answers 200 with an HTML page (a proxy, a captive portal)
        self.page_sizes: list[int] = []  # max_results of every API query
        self.requests = Counter()  # "api" and "pdf:<id>" -> count
        self.user_agents: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                fake.user_agents.add(self.headers.get("User-Agent", ""))
                url = urlparse(self.path)
                if url.path == "/api/query":
                    fake.requests["api"] += 1
                    params = parse_qs(url.query)
                    fake.page_sizes.append(int(params.get("max_results", ["10"])[0]))
                    if fake.api_faults:
                        return self._send(fake.api_faults.pop(0), b"<html>busy</html>", "text/html")
                    if params.get("search_query", [""])[0].removeprefix("cat:") in fake.failing_categories:
                        return self._send(503, b"<html>busy</html>", "text/html")
                    if fake.html_feed:
                        return self._send(200, b"<html><body>Sign in to continue</body></html>", "text/html")
                    return self._send(200, fake.query(params).encode(), "application/atom+xml")
                if url.path.startswith("/pdf/"):
                    versioned = url.path.removeprefix("/pdf/")
                    paper = next((p for p in fake.papers if f"{p.id}v{p.version}" == versioned), None)
                    fake.requests[f"pdf:{versioned}"] += 1
                    if paper is None:
                        return self._send(404, b"not found", "text/plain")
                    if paper.stall_s:
                        time.sleep(paper.stall_s)
                    if paper.trickle_s:
                        return self._trickle(paper)
                    return self._send(200, paper.pdf, paper.content_type)
                self._send(404, b"not found", "text/plain")

            def _trickle(self, paper):
                self.send_response(200)
                self.send_header("Content-Type", paper.content_type)
                self.send_header("Content-Length", str(len(paper.pdf)))
                self.end_headers()
                try:
                    for byte in paper.pdf:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(paper.trickle_s)
                except OSError:  # the client gave up, as it should
                    pass

            def _send(self, status, body, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # a stalled or trickling answer must not hold up shutdown
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.api_url = f"{self.base}/api/query"

    def query(self, params: dict[str, list[str]]) -> str:
        start = int(params.get("start", ["0"])[0])
        size = int(params.get("max_results", ["10"])[0])
        ids = [i for i in params.get("id_list", [""])[0].split(",") if i]
        query = params.get("search_query", [""])[0]
        if ids:
            matches = [p for i in ids for p in self.papers if p.id == i.split("v")[0] or f"{p.id}v{p.version}" == i]
        else:
            category = query.removeprefix("cat:")
            matches = [p for p in self.papers if category in p.categories]
            descending = params.get("sortOrder", ["descending"])[0] == "descending"
            matches.sort(key=lambda p: p.published, reverse=descending)
        return atom_feed(matches[start : start + size], len(matches), start, self.base)
