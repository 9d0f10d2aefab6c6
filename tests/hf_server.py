"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, and bundles to serve.

The tests drive the real ``huggingface_hub`` client through `astro_spt.hub` against this
server, so they exercise the client's cache, revision and error handling without the
internet. It implements what ``hf_hub_download`` and ``HfApi.create_commit`` call:

- ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with ``ETag``, ``X-Repo-Commit``,
  ``Content-Length`` and ``Range`` support; 404s carry the hub's ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the client raises the
  matching exception;
- ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}``
  (every file "regular": its bytes travel base64-encoded in the commit, no LFS),
  ``/api/models/{repo}/commit/{rev}`` (NDJSON) and ``/api/models/{repo}/branch/{branch}``.

``LocalHub.failures["model.safetensors"] = 500`` makes every request whose method and path
(``"GET /org/name/resolve/..."``) contain that string fail with that status (``""``
matches all); ``tamper`` changes the bytes served for a file without a new commit, as a
corrupt mirror would.
"""

import base64
import hashlib
import itertools
import json
import re
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import torch

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_API = re.compile(
    r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)/(?P<op>preupload|commit|branch)/(?P<rev>[^/]+)$"
)


class _Repo:
    def __init__(self):
        self.refs: dict[str, str] = {}  # branch or tag -> commit
        self.commits: dict[str, dict[str, bytes]] = {}

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class LocalHub:
    """An in-memory hub served on ``127.0.0.1`` (use as a context manager)."""

    def __init__(self):
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.failures: dict[str, int] = {}
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.url = None

    # -- content ------------------------------------------------------------------------

    def commit(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main") -> str:
        """Commit ``files`` on top of ``branch`` (creating repo and branch); return the hash."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            parent = repo.refs.get(branch)
            tree = dict(repo.commits.get(parent, {}))
            tree.update(files)
            digest = hashlib.sha1(f"{repo_id}{parent}{next(self._counter)}".encode())
            for name in sorted(tree):
                digest.update(name.encode() + hashlib.sha256(tree[name]).digest())
            sha = digest.hexdigest()
            repo.commits[sha] = tree
            repo.refs[branch] = sha
            return sha

    def commit_folder(self, repo_id: str, folder, *, branch: str = "main") -> str:
        """Commit every file of a directory (a saved bundle)."""
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        return self.commit(repo_id, files, branch=branch)

    def tag(self, repo_id: str, name: str, revision: str) -> None:
        """Point a tag (or branch) at a revision."""
        with self._lock:
            repo = self.repos[repo_id]
            repo.refs[name] = repo.resolve(revision)

    def tamper(self, repo_id: str, filename: str, data: bytes, *, revision: str = "main") -> None:
        """Serve other bytes for a file at a revision, without a new commit."""
        with self._lock:
            repo = self.repos[repo_id]
            repo.commits[repo.resolve(revision)][filename] = data

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repository at a revision."""
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]

    def count(self, method: str, pattern: str = "") -> int:
        """Number of requests of ``method`` whose path contains ``pattern``."""
        return sum(1 for m, path in self.requests if m == method and pattern in path)

    # -- server -------------------------------------------------------------------------

    def start(self) -> "LocalHub":
        """Serve on a free port of 127.0.0.1; ``url`` is set (and kept after `stop`)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._server.daemon_threads = True
        self._server.hub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalHub/1.0"

    def log_message(self, format, *args):  # keep the test output clean
        pass

    @property
    def hub(self) -> LocalHub:
        return self.server.hub

    def _send(self, status: int, body: bytes = b"", headers=None, *, with_body=True) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body and body:
            self.wfile.write(body)

    def _error(
        self, status: int, code: str | None, message: str, headers=None, *, with_body=True, **extra
    ):
        headers = dict(headers or {}, **{"Content-Type": "application/json"})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        body = json.dumps({"error": message, **extra}).encode()
        self._send(status, body, headers, with_body=with_body)

    def _json(self, payload, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _begin(self) -> str | None:
        path = urlsplit(self.path).path
        self.hub.requests.append((self.command, path))
        for pattern, status in self.hub.failures.items():
            if pattern in f"{self.command} {path}":
                self._error(status, None, "injected failure", with_body=self.command != "HEAD")
                return None
        return path

    # -- file downloads -----------------------------------------------------------------

    def do_HEAD(self):
        self._resolve(with_body=False)

    def do_GET(self):
        self._resolve(with_body=True)

    def _resolve(self, *, with_body: bool) -> None:
        path = self._begin()
        if path is None:
            return
        match = _RESOLVE.match(path)
        if match is None:
            return self._error(404, None, "not found", with_body=with_body)
        repo_id, revision, filename = match["repo"], unquote(match["rev"]), unquote(match["file"])
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", with_body=with_body)
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id", with_body=with_body)
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._error(
                404,
                "EntryNotFound",
                "Entry not found",
                {"X-Repo-Commit": commit},
                with_body=with_body,
            )
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
        }
        status, start = 200, 0
        byte_range = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if with_body and byte_range:
            start = int(byte_range[1])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(status, data[start:], headers, with_body=with_body)

    # -- publishing ---------------------------------------------------------------------

    def do_POST(self):
        path = self._begin()
        if path is None:
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = "/".join(filter(None, (payload.get("organization"), payload["name"])))
            if repo_id in self.hub.repos:
                # The hub sends the URL along with the conflict; the client reads it.
                url = f"{self.hub.url}/{repo_id}"
                return self._error(409, None, "You already created this model repo", url=url)
            # Like the hub, a new repository starts with one commit on main.
            self.hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})
            return self._json({"url": f"{self.hub.url}/{repo_id}"})
        match = _API.match(path)
        if match is None:
            return self._error(404, None, "not found")
        repo_id, op, revision = match["repo"], match["op"], unquote(match["rev"])
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if op == "preupload":
            files = json.loads(body)["files"]
            return self._json(
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]
                }
            )
        if op == "branch":
            if revision in repo.refs:
                return self._error(409, None, "Reference already exists")
            start = (json.loads(body or b"{}") or {}).get("startingPoint", "main")
            with self.hub._lock:
                repo.refs[revision] = repo.resolve(start)
            return self._json({})
        # commit: NDJSON, one header line then one line per file
        if revision not in repo.refs:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        files = {}
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                return self._error(400, None, f"unsupported operation {item['key']}")
        sha = self.hub.commit(repo_id, files, branch=revision)
        return self._json(
            {
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}",
                "commitOid": sha,
                "pullRequestUrl": None,
            }
        )


def isolate_huggingface_hub(monkeypatch) -> list[float]:
    """Make huggingface_hub deterministic and fast in a test; return its recorded sleeps.

    - online mode, whatever the environment says (tests switch it on themselves);
    - telemetry off: otherwise the client fetches an agent registry from huggingface.co
      once per process (its failure is swallowed, but it is a real network attempt);
    - its retry back-off (1, 2, 4, 8, 8 s on a 5xx or a refused connection) is recorded
      instead of slept, so error tests take milliseconds.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    sleeps: list[float] = []
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


def make_bundle(
    seed: int = 0, *, trained: bool = True, n_features: int = 64, n_components: int = 8
):
    """A tiny estimator bundle (d_model 16, one block) on random data; not a science model.

    ``trained=True`` runs a few optimiser steps so that the weights and BatchNorm
    statistics are not their initial values.
    """
    from astro_spt.bundle import EstimatorBundle, LabelSpec, ReferenceStats
    from astro_spt.nn import MahalanobisLoss, SpectralTransformer, model_precision
    from astro_spt.pca import PCABasis

    rng = np.random.default_rng(seed)
    flux = (
        1 + 0.1 * rng.normal(size=(64, n_features)) @ rng.normal(size=(n_features, n_features)) / 8
    )
    ages = rng.uniform(1, 12, size=64)
    masses = rng.uniform(0.8, 2.5, size=64)
    pca = PCABasis.fit(flux, n_components=n_components)
    labels = [
        LabelSpec("age", "Gyr", "log10", float(np.log10(ages).mean()), float(np.log10(ages).std())),
        LabelSpec("mass", "solMass", "linear", float(masses.mean()), float(masses.std())),
    ]
    torch.manual_seed(seed)
    network = SpectralTransformer(
        n_inputs=n_components, d_model=16, n_heads=2, n_blocks=1, dropout=0.2
    )
    y_phys = np.stack([ages, masses], axis=1)
    y = np.stack([labels[0].to_network(ages), labels[1].to_network(masses)], axis=1)
    if trained:
        x = torch.as_tensor(pca.transform(flux), dtype=torch.float32)
        target = torch.as_tensor(y, dtype=torch.float32)
        loss_fn = MahalanobisLoss.from_labels(target)
        optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
        network.train()
        for _ in range(5):
            optimiser.zero_grad()
            loss_fn(network(x), target).backward()
            optimiser.step()
        network.eval()
    return EstimatorBundle(
        network,
        pca,
        labels,
        preprocess_config={"grid": {"n_pixels": n_features}},
        label_covariance=np.cov(y, rowvar=False),
        n_samples=16,
        tau=model_precision(0.2, 1.0, 64, 5e-4),
        reference=ReferenceStats.from_training(pca, flux, y_phys, ["age", "mass"]),
        provenance={
            "data": "random numbers (test bundle, not a science model)",
            "n_train": 64,
            "seed": seed,
            "metrics": {"age": {"n": 16, "delta": 1.5, "delta_p": 30.0}},
        },
        description="tiny test bundle",
    ), flux
