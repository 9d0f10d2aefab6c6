"""Estimator bundles by name: the embedded default, a local directory, or a hub repository.

`load_model` is the one entry point (SPEC §2, layer 5). Hub repositories are fetched with
``huggingface_hub`` into the standard Hugging Face cache, pinned to a revision, and every
file is checked against the sha256 in the bundle's ``config.json``; a file that fails
the check is deleted from the cache so that the next attempt fetches it again. Once a
revision is cached it loads without network access (``HF_HUB_OFFLINE=1`` or
``local_files_only=True``). `push_bundle` publishes a bundle.

Defaults come from `astro_spt.conf`: ``hub_repo`` and ``hub_revision`` (the default model
when ``load_model()`` gets no name), ``cache_dir`` and ``hub_endpoint``.
"""

import functools
import os
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from .bundle import CONFIG_NAME, EstimatorBundle, find_corrupt_files, read_bundle_config
from .bundle.storage import _package_version
from .conf import conf
from .exceptions import (
    HubConnectionError,
    HubEntryNotFoundError,
    HubIntegrityError,
    HubRepositoryNotFoundError,
    HubRevisionNotFoundError,
    ModelNotFoundError,
    OfflineCacheMissError,
)

__all__ = ["download_model", "load_model", "push_bundle", "resolve_model"]

EMBEDDED_MODEL = ("data", "default_model")
"""Where the default bundle sits inside the installed package."""

DEFAULT_REVISION = "main"
# Hugging Face repository ids: an optional namespace and a name of word characters, "-", ".".
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline_mode() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; the environment is read again
    # here so that setting it later in the session still works.
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _is_true(os.environ.get("HF_HUB_OFFLINE"))


def _cache_dir(cache_dir) -> str:
    from huggingface_hub import constants

    cache_dir = cache_dir or conf.cache_dir or constants.HF_HUB_CACHE
    # Resolved once so that our paths and huggingface_hub's agree.
    return str(Path(cache_dir).expanduser().resolve())


def _endpoint(endpoint: str | None) -> str | None:
    endpoint = endpoint or conf.hub_endpoint or None
    return endpoint.rstrip("/") if endpoint else None


def _endpoint_name(endpoint: str | None) -> str:
    if endpoint:
        return endpoint
    from huggingface_hub import constants

    return constants.ENDPOINT


def _download_command(repo_id: str, revision: str, cache_dir: str | None) -> str:
    command = f"astro-spt download {repo_id} --revision {revision}"
    return command + (f" --cache-dir {cache_dir}" if cache_dir else "")


def _transport_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub 1.x/2.x speaks httpx/httpx2, 0.x requests: whichever it imported.
    errors = []
    for module, name in (
        ("httpx2", "HTTPError"),
        ("httpx", "HTTPError"),
        ("requests", "RequestException"),
    ):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _describe(err: BaseException) -> str:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"HTTP {status}" + (" server error" if status >= 500 else "")
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _hub_error(
    err: BaseException,
    *,
    repo_id: str,
    revision: str,
    filename: str | None,
    endpoint: str | None,
    cache_dir: str | None,
    offline: bool,
    offline_reason: str = "",
) -> BaseException:
    """Translate a huggingface_hub / HTTP exception into a `HubError` that says what to do."""
    from huggingface_hub import errors as hf

    where = _endpoint_name(endpoint)
    if isinstance(err, hf.RevisionNotFoundError):
        return HubRevisionNotFoundError(
            f"revision {revision!r} of {repo_id} does not exist at {where}: check the branch, "
            "tag or commit name"
        )
    if isinstance(err, hf.RepositoryNotFoundError):
        return HubRepositoryNotFoundError(
            f"repository {repo_id} was not found at {where} (and there is no local directory "
            "of that name). Check the name; for a private or gated repository pass token= or "
            "log in with `hf auth login`"
        )
    if isinstance(err, hf.LocalEntryNotFoundError) or isinstance(err, hf.OfflineModeIsEnabled):
        if offline or isinstance(err, hf.OfflineModeIsEnabled):
            return OfflineCacheMissError(
                f"{repo_id} at revision {revision!r} is not in the cache {cache_dir} and network "
                f"access is disabled{offline_reason}. While online, run "
                f"`{_download_command(repo_id, revision, cache_dir)}` to pre-download it, or "
                "pass cache_dir= (astro_spt.conf.cache_dir) pointing at a cache that holds it"
            )
        cause = err.__cause__ or err.__context__
        reason = f" ({_describe(cause)})" if cause is not None else ""
        return HubConnectionError(
            f"could not fetch {filename or 'files'} of {repo_id} at revision {revision!r} from "
            f"{where}{reason}, and it is not in the cache {cache_dir}. Check the network "
            "connection and the endpoint, and try again; to work offline later, pre-download "
            f"it with `{_download_command(repo_id, revision, cache_dir)}`"
        )
    if isinstance(err, hf.EntryNotFoundError):
        return HubEntryNotFoundError(
            f"{filename} is missing from {repo_id} at revision {revision!r} ({where}): is it an "
            "astro_spt estimator bundle?"
        )
    if isinstance(err, hf.HfHubHTTPError):
        return HubConnectionError(
            f"the hub at {where} answered {_describe(err)} for {filename or 'the request'} of "
            f"{repo_id} at revision {revision!r}: {str(err).strip().splitlines()[0]}"
        )
    if isinstance(err, (OSError, *_transport_errors())):
        return HubConnectionError(
            f"could not fetch {filename or 'files'} of {repo_id} at revision {revision!r} from "
            f"{where}: {_describe(err)}. Check the network connection and try again"
        )
    return err


# Seconds to wait for the hub's host to accept a connection before giving up.
_CONNECT_TIMEOUT_S = 5.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def _unreachable(endpoint: str | None) -> str | None:
    """Why the hub's host cannot be reached (no name resolution or no connection within
    ``_CONNECT_TIMEOUT_S``), or None when it can, or when a proxy decides."""
    import socket
    import threading
    from urllib.parse import urlsplit

    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    url = urlsplit(_endpoint_name(endpoint))
    if not url.hostname:
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome = []

    def connect():
        try:
            with socket.create_connection((url.hostname, port), timeout=_CONNECT_TIMEOUT_S):
                outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or str(err) or type(err).__name__)

    # name resolution knows no timeout of its own: a thread waited for, at most so long
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(_CONNECT_TIMEOUT_S)
    return outcome[0] if outcome else f"no answer within {_CONNECT_TIMEOUT_S:g} s"


def _remove_from_cache(pointers, *, with_blobs: bool) -> None:
    """Delete snapshot entries (and, for corrupt files, the blobs they point to)."""
    for pointer in pointers:
        blob = None
        if with_blobs and pointer.is_symlink():
            target = pointer.resolve()
            # Only ever delete inside the repository's own blobs/ folder.
            if target.parent.name == "blobs" and target.parent.parent == pointer.parents[2]:
                blob = target
        pointer.unlink(missing_ok=True)
        if blob is not None:
            blob.unlink(missing_ok=True)
        try:
            pointer.parent.rmdir()  # the snapshot folder, once empty
        except OSError:
            pass


def download_model(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir=None,
    local_files_only: bool | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Fetch a bundle from the hub into the local cache and verify it.

    ``config.json`` is fetched first, at ``revision``; the other files it lists are then
    fetched at the commit that ``config.json`` came from, so that a branch moving
    during the download cannot mix two versions. Files already cached are not fetched
    again. A file the server states to be of another size than ``config.json``
    records is refused before it is fetched. Every file is checked against its sha256;
    on any failure the snapshot entries made by this call are removed again, and
    corrupt files are deleted, so the cache never holds a half-written bundle.

    Parameters
    ----------
    repo_id : str
        Hub repository, ``"namespace/name"``.
    revision : str or None, optional
        Branch, tag or commit hash (default ``"main"``). Pin a commit hash for
        reproducible results.
    cache_dir : path-like or None, optional
        Cache directory; default ``astro_spt.conf.cache_dir``, then the standard
        Hugging Face cache (``HF_HUB_CACHE``).
    local_files_only : bool or None, optional
        Never use the network. ``None`` means: only when ``HF_HUB_OFFLINE`` is set.
    endpoint : str or None, optional
        Hub URL; default ``astro_spt.conf.hub_endpoint``, then ``HF_ENDPOINT``, then
        https://huggingface.co.
    token : str, bool or None, optional
        Hub token for private repositories (default: the locally saved one).

    Returns
    -------
    `pathlib.Path`
        The verified snapshot directory (a bundle directory).

    Raises
    ------
    OfflineCacheMissError
        Offline, and the revision is not cached.
    HubRepositoryNotFoundError, HubRevisionNotFoundError, HubEntryNotFoundError
        The repository, revision or a file does not exist.
    HubConnectionError
        The hub cannot be reached or answers with an error.
    HubIntegrityError
        A file does not match its sha256 (it was removed from the cache).
    UnsupportedSchemaError
        The bundle needs a newer astro_spt.

    Examples
    --------
    Fetch a bundle once while online; later calls find it in the cache:

    >>> from astro_spt.hub import download_model
    >>> path = download_model("astro-spt/example", revision="v1")  # doctest: +SKIP

    Offline, a revision that is not cached fails with a message that says what to do:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as empty_cache:
    ...     download_model("astro-spt/example", cache_dir=empty_cache, local_files_only=True)
    Traceback (most recent call last):
    ...
    astro_spt.exceptions.OfflineCacheMissError: astro-spt/example at revision 'main' is not ...
    """
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        try_to_load_from_cache,
    )

    if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ValueError(f"{repo_id!r} is not a hub repository id ('namespace/name')")
    revision = revision or DEFAULT_REVISION
    cache_dir = _cache_dir(cache_dir)
    endpoint = _endpoint(endpoint)
    if local_files_only is None:
        offline, offline_reason = _offline_mode(), " (HF_HUB_OFFLINE is set)"
    else:
        offline, offline_reason = bool(local_files_only), " (local_files_only=True)"
    # huggingface_hub retries a host it cannot reach for half a minute: ask once, briefly
    unreachable = None if offline else _unreachable(endpoint)
    translate = functools.partial(
        _hub_error,
        repo_id=repo_id,
        revision=revision,
        endpoint=endpoint,
        cache_dir=cache_dir,
        offline=offline,
        offline_reason=offline_reason,
    )

    def reraise(err: Exception, filename: str):
        """Raise ``err`` as the astro_spt error it means (`_hub_error`), or as it is."""
        translated = translate(err, filename=filename)
        if translated is err:
            raise err
        raise translated from err

    def fetch(filename: str, at: str) -> Path:
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=at,
                    cache_dir=cache_dir,
                    local_files_only=offline or unreachable is not None,
                    endpoint=endpoint,
                    token=token,
                    library_name="astro-spt",
                    library_version=_package_version(),
                )
            )
        except Exception as err:
            if unreachable is not None:
                raise HubConnectionError(
                    f"could not fetch {filename} of {repo_id} at revision {revision!r}: "
                    f"{_endpoint_name(endpoint)} cannot be reached ({unreachable}), and it is "
                    f"not in the cache {cache_dir}. Check the network connection and the "
                    "endpoint, and try again; to work offline later, pre-download it with "
                    f"`{_download_command(repo_id, revision, cache_dir)}`"
                ) from err
            reraise(err, filename)

    def server_size(filename: str, at: str) -> int | None:
        """The file's size as the server states it (None if it does not say)."""
        url = hf_hub_url(repo_id, filename, revision=at, endpoint=endpoint)
        try:
            metadata = get_hf_file_metadata(
                url,
                token=token,
                library_name="astro-spt",
                library_version=_package_version(),
                endpoint=endpoint,
            )
        except Exception as err:
            reraise(err, filename)
        return metadata.size

    cached_config = try_to_load_from_cache(
        repo_id, CONFIG_NAME, cache_dir=cache_dir, revision=revision
    )
    config_path = fetch(CONFIG_NAME, revision)
    created = [] if str(config_path) == cached_config else [config_path]
    snapshot = config_path.parent
    try:
        config = read_bundle_config(snapshot)
        for name, entry in config["files"].items():
            pointer = snapshot / name
            existed = os.path.lexists(pointer)
            if not existed and not offline and unreachable is None:
                # Refuse a file of another size than config.json records before fetching
                # it, not after: a wrong or huge file never reaches the disk.
                size = server_size(name, snapshot.name)
                if size is not None and size != entry["size"]:
                    raise HubIntegrityError(
                        f"{repo_id} at revision {revision!r}: the server holds {name} of "
                        f"{size:,} bytes, but its {CONFIG_NAME} records {entry['size']:,}; "
                        "it was not downloaded. The repository is inconsistent (or the "
                        "server is not a Hugging Face hub).",
                        filename=name,
                        path=pointer,
                    )
            # The snapshot folder is named by its commit hash: pin the other files to it.
            fetch(name, snapshot.name)
            if not existed:
                created.append(pointer)
        problems = find_corrupt_files(snapshot, config)
        if problems:
            _remove_from_cache([snapshot / name for name in problems], with_blobs=True)
            listing = ", ".join(f"{name} ({why})" for name, why in problems.items())
            raise HubIntegrityError(
                f"{repo_id} at revision {revision!r} fails verification against the sha256 "
                f"in its {CONFIG_NAME}: {listing}. The file was corrupted in transit or "
                "changed on the server; it was removed from the cache, so trying again "
                "fetches it anew. If it fails again, the repository itself is inconsistent.",
                filename=next(iter(problems)),
                path=snapshot / next(iter(problems)),
            )
    except BaseException:
        _remove_from_cache(created, with_blobs=False)
        raise
    return snapshot


def _embedded_model_path() -> Path:
    resource = resources.files("astro_spt").joinpath(*EMBEDDED_MODEL)
    if isinstance(resource, Path) and (resource / CONFIG_NAME).is_file():
        return resource
    raise ModelNotFoundError(
        f"No embedded default model is installed in astro_spt {_package_version()}: this "
        "release does not ship trained weights yet. Load a bundle explicitly, from a "
        "directory (astro_spt.load_model('path/to/bundle')) or from the Hugging Face Hub "
        "(astro_spt.load_model('namespace/name', revision='...')), or set "
        "astro_spt.conf.hub_repo to make a hub repository the default."
    )


def resolve_model(
    name_or_path=None,
    *,
    revision: str | None = None,
    cache_dir=None,
    local_files_only: bool | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """The local bundle directory for a model name, downloading it when it is a hub repo.

    Takes the same arguments as `load_model` and returns the directory it would load.

    Returns
    -------
    `pathlib.Path`
        A bundle directory: the embedded default's, the given directory, or the
        verified snapshot of a hub repository in the cache.

    Raises
    ------
    ModelNotFoundError, HubError
        As `load_model`.

    Examples
    --------
    >>> from astro_spt.hub import resolve_model
    >>> path = resolve_model()  # the embedded default: no network, no download
    >>> path.name, sorted(p.name for p in path.iterdir())  # doctest: +NORMALIZE_WHITESPACE
    ('default_model', ['README.md', 'config.json', 'model.safetensors', 'pca.safetensors',
                       'reference.safetensors'])
    >>> resolve_model(path) == path  # a bundle directory is returned as it is
    True
    >>> path = resolve_model("astro-spt/example", revision="v1")  # doctest: +SKIP
    """
    return _resolve(name_or_path, revision, cache_dir, local_files_only, endpoint, token)[0]


def _resolve(name_or_path, revision, cache_dir, local_files_only, endpoint, token):
    """`resolve_model`'s directory, with the model's name and commit (None off the hub)."""
    if name_or_path is None:
        if conf.hub_repo:
            name_or_path = conf.hub_repo
            revision = revision or conf.hub_revision or None
        else:
            if revision is not None:
                raise ValueError("revision= applies to hub repositories, not the embedded model")
            return _embedded_model_path(), "astro_spt embedded default", None
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"revision= applies to hub repositories, not to the directory {path}")
        return path, str(path), None
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or not _REPO_ID.match(text) or text.startswith("."):
        raise ModelNotFoundError(
            f"{text} is neither a bundle directory nor a hub repository id ('namespace/name')"
        )
    path = download_model(
        text,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        endpoint=endpoint,
        token=token,
    )
    return path, text, path.name


def load_model(
    name_or_path=None,
    *,
    revision: str | None = None,
    cache_dir=None,
    local_files_only: bool | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> EstimatorBundle:
    """Load an estimator bundle: the embedded default, a directory, or a hub repository.

    Parameters
    ----------
    name_or_path : str, path-like or None, optional
        ``None``: the default model, that is the hub repository
        ``astro_spt.conf.hub_repo`` (at ``conf.hub_revision``) when set, else the
        bundle embedded in the package (no network). An existing directory: the
        bundle in it. Otherwise a hub repository id, ``"namespace/name"``.
    revision : str or None, optional
        Branch, tag or commit hash of a hub repository (default ``"main"``). Pin a
        commit hash for reproducible results.
    cache_dir : path-like or None, optional
        Download cache; default ``astro_spt.conf.cache_dir``, then the standard Hugging
        Face cache.
    local_files_only : bool or None, optional
        Use only the cache, never the network. ``None`` means: only when the
        ``HF_HUB_OFFLINE`` environment variable is set.
    endpoint : str or None, optional
        Hub URL; default ``astro_spt.conf.hub_endpoint``, then ``HF_ENDPOINT``.
    token : str, bool or None, optional
        Hub token for private repositories.

    Returns
    -------
    `~astro_spt.bundle.EstimatorBundle`

    Raises
    ------
    ModelNotFoundError
        No such directory, or (for ``None``) no embedded model installed.
    HubError
        The hub repository cannot be fetched (see `download_model`); the subclass says
        why: `~astro_spt.exceptions.OfflineCacheMissError`,
        `~astro_spt.exceptions.HubRepositoryNotFoundError`, ...
    BundleIntegrityError
        A file differs from its recorded sha256 (the message names it).
    UnsupportedSchemaError
        The bundle needs a newer astro_spt (the message says which).

    Examples
    --------
    >>> import tempfile
    >>> import astro_spt
    >>> model = astro_spt.load_model()  # the embedded default: no network
    >>> model.name, model.label_names
    ('astro_spt embedded default', ('age', 'mass'))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = model.save_pretrained(f"{tmp}/my-bundle")
    ...     local = astro_spt.load_model(path)  # a bundle directory
    >>> local.name == str(path)
    True

    A hub repository, pinned to a revision (fetched once, then read from the cache):

    >>> model = astro_spt.load_model("astro-spt/example", revision="v1")  # doctest: +SKIP
    """
    path, name, commit = _resolve(
        name_or_path, revision, cache_dir, local_files_only, endpoint, token
    )
    bundle = EstimatorBundle.from_pretrained(path)
    # What estimate() records in its table's meta: which model, at which commit.
    bundle.name, bundle.revision = name, commit
    return bundle


def push_bundle(
    bundle: EstimatorBundle,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload astro_spt estimator bundle",
    endpoint: str | None = None,
    dtype: str = "float32",
) -> str:
    """Publish a bundle to a hub repository in one commit (`EstimatorBundle.push_to_hub`).

    The repository is created when missing (``private`` sets its visibility), and the
    ``revision`` branch too. The bundle is saved into a temporary directory and its
    files are committed together, so readers never see a partial bundle. A bundle with
    no model card gets one that names ``repo_id`` in its usage example.

    Returns
    -------
    str
        The commit hash.

    Raises
    ------
    HubError
        The hub refused or could not be reached.

    Examples
    --------
    Record what the bundle was trained on, and let a fresh model card be rendered (it
    names the repository in its usage example); publishing needs a network connection
    and a Hugging Face token with write access:

    >>> import astro_spt
    >>> from astro_spt.hub import push_bundle
    >>> from astro_spt.model_card import render_model_card
    >>> model = astro_spt.load_model()
    >>> model.provenance["data"] = "my LAMOST giants with asteroseismic labels"
    >>> model.model_card = None
    >>> card = render_model_card(model.to_config(), repo_id="your-name/lamost-age-mass")
    >>> print(next(line for line in card.splitlines() if "load_model(" in line))
    model = astro_spt.load_model("your-name/lamost-age-mass", revision="<commit>")
    >>> commit = push_bundle(model, "your-name/lamost-age-mass", private=True)  # doctest: +SKIP
    >>> model = astro_spt.load_model("your-name/lamost-age-mass", revision=commit)  # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    endpoint = _endpoint(endpoint)
    if _offline_mode():
        raise HubConnectionError(
            f"cannot publish {repo_id}: network access is disabled (HF_HUB_OFFLINE is set)"
        )
    api = HfApi(
        endpoint=endpoint,
        token=token,
        library_name="astro-spt",
        library_version=_package_version(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = bundle.save_pretrained(Path(tmp) / "bundle", dtype=dtype, repo_id=repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision not in (None, DEFAULT_REVISION):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            operations = [
                CommitOperationAdd(path_in_repo=file.name, path_or_fileobj=str(file))
                for file in sorted(path.iterdir())
            ]
            commit = api.create_commit(
                repo_id, operations, commit_message=commit_message, revision=revision
            )
        except Exception as err:
            translated = _hub_error(
                err,
                repo_id=repo_id,
                revision=revision or DEFAULT_REVISION,
                filename=None,
                endpoint=endpoint,
                cache_dir=None,
                offline=False,
            )
            if translated is err:
                raise
            raise translated from err
    return commit.oid
