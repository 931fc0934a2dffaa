//! Creating a hardened container (network none, read-only root, tmpfs work areas, dropped
//! capabilities, limits, labels), the guard that removes it on every path, and the host
//! staging dir it mounts at `/cands`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;

use super::{
    CLEANUP_TIMEOUT, DockerSandbox, LABEL, ROLE_LABEL, STAGING_LABEL, connect_engine, engine,
};
use crate::{RunSpec, SandboxError, random_hex};
use vocab::tree::{Perms, copy_tree};

impl DockerSandbox {
    pub(super) fn container_body(
        &self,
        spec: &RunSpec,
        staging: &Path,
        uid: u32,
        role: &str,
        cmd: Vec<String>,
    ) -> ContainerCreateBody {
        let lim = &spec.limits;
        let mem = i64::try_from(lim.memory_bytes).unwrap_or(i64::MAX);
        let tmpfs_opts = format!("rw,exec,nosuid,nodev,size={},mode=1777", lim.tmpfs_bytes);
        let tmp_size = (lim.tmpfs_bytes / 4).max(16 << 20);
        let tmpfs = HashMap::from([
            ("/work".to_owned(), tmpfs_opts),
            (
                "/tmp".to_owned(),
                format!("rw,exec,nosuid,nodev,size={tmp_size},mode=1777"),
            ),
        ]);
        let ulimit = |name: &str, v: u64| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(i64::try_from(v).unwrap_or(i64::MAX)),
            hard: Some(i64::try_from(v).unwrap_or(i64::MAX)),
        };
        let host = HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            mounts: Some(vec![Mount {
                target: Some("/cands".into()),
                source: Some(staging.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            }]),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            memory: Some(mem),
            memory_swap: Some(mem),
            nano_cpus: Some((lim.cpus * 1e9) as i64),
            pids_limit: Some(i64::from(lim.pids)),
            shm_size: Some(i64::try_from(lim.tmpfs_bytes.min(64 << 20)).unwrap_or(64 << 20)),
            ulimits: Some(vec![
                ulimit("nofile", u64::from(lim.nofile)),
                ulimit("nproc", u64::from(lim.pids)),
                ulimit("core", 0),
            ]),
            init: Some(true),
            runtime: self.runtime.clone(),
            ipc_mode: Some("private".into()),
            auto_remove: Some(false),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(cmd),
            user: Some(format!("{uid}:{uid}")),
            env: Some(vec![]),
            working_dir: Some("/".into()),
            hostname: Some("sandbox".into()),
            // Not `network_disabled`: that also drops the container's /etc/hosts, and test
            // suites that serve on `localhost` (vitest does, to itself) fail to resolve it.
            // Network `none` already leaves only the loopback interface.
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            open_stdin: Some(false),
            labels: Some(HashMap::from([
                (LABEL.to_owned(), self.instance.clone()),
                (ROLE_LABEL.to_owned(), role.to_owned()),
                (STAGING_LABEL.to_owned(), staging.display().to_string()),
            ])),
            host_config: Some(host),
            ..Default::default()
        }
    }

    pub(super) async fn create(
        &self,
        body: ContainerCreateBody,
    ) -> Result<ContainerGuard, SandboxError> {
        let name = format!("coval-sandbox-{}", &random_hex()[..16]);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(engine("create container"))?;
        Ok(ContainerGuard {
            docker: self.docker.clone(),
            id: created.id,
            armed: true,
        })
    }
}

/// Removes its container when dropped, unless [`ContainerGuard::remove`] did already.
pub(super) struct ContainerGuard {
    docker: Docker,
    pub id: String,
    armed: bool,
}

impl ContainerGuard {
    /// Disarms the guard of a container created with AutoRemove that has been told to end
    /// (its stdin closed, its process exiting): the engine removes it, coval does not wait.
    pub fn leave_to_engine(mut self) {
        self.armed = false;
    }

    pub async fn remove(mut self) -> Result<(), SandboxError> {
        let r = remove_container(&self.docker, &self.id).await;
        if r.is_ok() {
            self.armed = false;
        }
        r
    }
}

pub(super) async fn remove_container(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let fut = docker.remove_container(id, Some(opts));
    match tokio::time::timeout(CLEANUP_TIMEOUT, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(()),
        // 409: a removal is already in progress.
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        })) => Ok(()),
        Ok(Err(e)) => Err(engine("remove container")(e)),
        Err(_) => Err(SandboxError::Docker {
            op: "remove container",
            reason: format!("no answer within {} s", CLEANUP_TIMEOUT.as_secs()),
        }),
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // A panic or a cancelled future got here. Removal is async; run it on a thread of its
        // own, with its own runtime and its own connection, so it works whatever state the
        // caller's runtime is in (even a current-thread runtime blocked right here).
        let id = std::mem::take(&mut self.id);
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(d) = connect_engine().await
                    && let Err(e) = remove_container(&d, &id).await {
                        tracing::warn!(container = %id, error = %e, "cannot remove a sandbox container");
                    }
            });
        });
        let _ = handle.join();
    }
}

/// The host dir mounted read-only at `/cands`, one subdirectory per candidate.
pub(super) struct Staging {
    _dir: vocab::scratch::ScratchDir,
    pub path: PathBuf,
}

impl Staging {
    pub fn new() -> Result<Staging, SandboxError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = vocab::scratch::ScratchDir::new("coval-sandbox-")
            .map_err(|e| SandboxError::io("cannot create a staging dir", e))?;
        // The container's unprivileged user must be able to enter it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SandboxError::io("cannot open up the staging dir", e))?;
        let path = dir.path().to_path_buf();
        Ok(Staging { _dir: dir, path })
    }

    pub async fn add(&self, name: &str, from: &Path) -> Result<(), SandboxError> {
        let to = self.path.join(name);
        let from = from.to_path_buf();
        tokio::task::spawn_blocking(move || copy_tree(&from, &to, Perms::WorldReadable))
            .await
            .map_err(|e| SandboxError::io("staging task failed", std::io::Error::other(e)))?
            .map_err(|e| SandboxError::io("cannot stage the project for the sandbox", e))?;
        Ok(())
    }

    pub async fn remove(&self, name: &str) {
        let p = self.path.join(name);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(p)).await;
    }
}

/// The container's exit code, once it has stopped.
pub(super) async fn wait_exit(docker: &Docker, id: &str) -> Result<i64, SandboxError> {
    let opts = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut s = docker.wait_container(id, Some(opts));
    let first = tokio::time::timeout(CLEANUP_TIMEOUT, s.next()).await;
    match first {
        Ok(Some(Ok(r))) => Ok(r.status_code),
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Ok(code),
        Ok(Some(Err(e))) => Err(engine("wait container")(e)),
        Ok(None) => Err(SandboxError::Docker {
            op: "wait container",
            reason: "the engine closed the wait stream".into(),
        }),
        Err(_) => Err(SandboxError::Docker {
            op: "wait container",
            reason: "the container did not stop after being killed".into(),
        }),
    }
}
