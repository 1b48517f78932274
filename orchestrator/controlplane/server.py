"""Everything a running control plane is, started and stopped as one: Triton servers, store,
ControlPlane, controller thread and the HTTP server (used by `serve`, `demo` and the tests)."""

from __future__ import annotations

import secrets
from pathlib import Path

from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.controlplane.app import HttpServer, create_app
from orchestrator.controlplane.controller import Controller
from orchestrator.controlplane.service import ControlPlane, ControlPlaneConfig
from orchestrator.controlplane.store import Store
from orchestrator.errors import UserError
from orchestrator.profiles import ProfileSet
from orchestrator.triton.runtime import ClusterRuntime


SERVERS_SETTING = "embedded_servers"  # the store's record of the embedded servers this control plane runs


class ControlPlaneServer:
    """`start()` brings the control plane up (and resumes the stored plan); `stop()` takes it all down.

    `runtime`: servers that are already running (not stopped here); otherwise the cluster's servers
    are started here and stopped by `stop()`.
    """

    def __init__(self, cluster: Cluster, profiles: ProfileSet, config: ControlPlaneConfig,
                 model_repository: str | Path | None = None, runtime: ClusterRuntime | None = None,
                 host: str = "127.0.0.1", port: int = 8080, controller: bool = True,
                 catalog: Catalog | None = None):
        repo = Path(model_repository or cluster.model_repository or "")
        if not str(repo) or not (repo / "variants.json").is_file():
            raise UserError(f"model repository {repo or '(none)'} has no variants.json; run `orchestrator export` "
                            f"or set model_repository in the cluster file")
        if config.token is None:
            config.token = secrets.token_urlsafe(12)
        self.config = config
        self.catalog = catalog or Catalog.load(repo)
        self.cluster = cluster
        self.profiles = profiles
        self.model_repository = repo
        self._own_runtime = runtime is None
        # with a state file, embedded servers outlive a crash of this process, and the next start adopts them
        self._adopts = runtime is None and config.db_path != ":memory:"
        self.runtime = runtime or ClusterRuntime(cluster, repo, load_timeout_s=config.load_timeout_s,
                                                 outlive_owner=self._adopts)
        self.host, self.port = host, port
        self.with_controller = controller
        self.store: Store | None = None
        self.cp: ControlPlane | None = None
        self.controller: Controller | None = None
        self.http: HttpServer | None = None

    @property
    def url(self) -> str:
        return self.http.url if self.http else ""

    def start(self, log=lambda msg: None) -> "ControlPlaneServer":
        try:
            self.store = Store(self.config.db_path)
            if self._own_runtime:
                log(f"starting {len(self.cluster.devices)} Triton server(s) ...")
                left = self.store.get_setting(SERVERS_SETTING, {}) if self._adopts else {}
                self.runtime.start(adopt=left if isinstance(left, dict) else {})
                if self.runtime.adopted:
                    log(f"took over the Triton server(s) a previous run left running: {', '.join(self.runtime.adopted)}")
                self._save_servers()
            self.cp = ControlPlane(self.cluster, self.catalog, self.profiles, self.runtime, self.store, self.config)
            self.cp.executor.log = log
            self.cp.on_restart = self._save_servers
            self.cp.start_health()
            resumed = self.cp.resume()
            if resumed is not None:
                log(f"resumed plan v{resumed.plan.version} ({resumed.diff.summary() if resumed.diff.changes_models else 'nothing to load'})")
            self.http = HttpServer(create_app(self.cp), host=self.host, port=self.port).start()
            if self.with_controller:
                self.controller = Controller(self.cp, wake=self.cp.wake).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.cp is not None:
            self.cp.close()
        if self._own_runtime:
            self.runtime.stop()
            self._save_servers()
        if self.store is not None:
            self.store.close()
            self.store = None

    def _save_servers(self) -> None:
        """What a restart after a crash would adopt (the running embedded servers), or nothing."""
        if self._adopts and self.store is not None:
            self.store.set_setting(SERVERS_SETTING, self.runtime.records())

    def __enter__(self) -> "ControlPlaneServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
