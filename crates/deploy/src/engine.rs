//! The Docker engine calls of a deployment (bollard, API version negotiated): building an
//! iteration's image from a generated build context with network none on a local base image,
//! creating app and proxy containers with a health check and limits, reading their state and
//! logs, and removing them. Every container and image coval makes carries [`LABEL`].

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HealthConfig, HealthStatusEnum, HostConfig, Mount,
    MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;

use crate::DeployError;

/// On every container and image coval run makes; the value is the project name.
pub const LABEL: &str = "dev.coval.deploy";
/// `app` or `proxy`.
pub const ROLE: &str = "dev.coval.deploy.role";
/// The hash of the build context an image was built from.
pub const CONTENT: &str = "dev.coval.deploy.content";

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// Host networking bound to an address, or a user-defined bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    Host,
    /// Join `network`; publish `publish` = (host ip, host port, container port) when set.
    Bridge {
        network: String,
        publish: Option<(String, u16, u16)>,
    },
}

#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// (host path, container path, read-only).
    pub mounts: Vec<(String, String, bool)>,
    pub net: Net,
    pub user: String,
    pub labels: HashMap<String, String>,
    pub healthcheck: Option<Vec<String>>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids: i64,
    pub workdir: String,
    pub restart: bool,
}

/// What the engine says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Docker's health check: healthy, unhealthy, starting, none.
    pub health: String,
}

impl Engine {
    pub async fn connect() -> Result<Engine, DeployError> {
        let unreachable = |e: String| {
            DeployError::Unreachable(format!(
                "the Docker engine does not answer ({e}): start it (scripts/dev-services.sh up) or set DOCKER_HOST"
            ))
        };
        let d = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
        let d = tokio::time::timeout(Duration::from_secs(5), d.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 5 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        d.ping().await.map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine { docker: d })
    }

    /// The image's labels, or `None` when it does not exist.
    pub async fn image_labels(
        &self,
        image: &str,
    ) -> Result<Option<HashMap<String, String>>, DeployError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(i.config.and_then(|c| c.labels).unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(DeployError::docker("inspect image")(e)),
        }
    }

    pub async fn require_image(&self, image: &str) -> Result<(), DeployError> {
        if self.image_labels(image).await?.is_some() {
            return Ok(());
        }
        let variant = image
            .strip_prefix("coval/")
            .and_then(|r| r.split(':').next())
            .unwrap_or("python-web");
        Err(DeployError::Unreachable(format!(
            "the base image {image} is missing: build it with scripts/build-base-images.sh {variant}"
        )))
    }

    /// Builds `tag` from a tar build context, with no network and no pull (the base image
    /// must be local).
    pub async fn build(
        &self,
        tag: &str,
        context: Vec<u8>,
        labels: &HashMap<String, String>,
    ) -> Result<(), DeployError> {
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .networkmode("none")
            .labels(labels)
            .build();
        let mut stream =
            self.docker
                .build_image(opts, None, Some(bollard::body_full(context.into())));
        let mut log = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = info.stream {
                        log.push_str(&s);
                    }
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        return Err(DeployError::Internal(format!(
                            "building {tag} failed: {e}\n{}",
                            tail(&log, 20)
                        )));
                    }
                }
                Err(e) => {
                    return Err(DeployError::Internal(format!(
                        "building {tag} failed: {e}\n{}",
                        tail(&log, 20)
                    )));
                }
            }
        }
        Ok(())
    }

    pub async fn remove_image(&self, image: &str) -> Result<(), DeployError> {
        let opts = RemoveImageOptionsBuilder::default().force(true).build();
        match self.docker.remove_image(image, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DeployError::docker("remove image")(e)),
        }
    }

    pub async fn create_and_start(&self, s: &ContainerSpec) -> Result<(), DeployError> {
        let mounts = s
            .mounts
            .iter()
            .map(|(src, dst, ro)| Mount {
                target: Some(dst.clone()),
                source: Some(src.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(*ro),
                ..Default::default()
            })
            .collect();
        let (network_mode, port_bindings, exposed) = match &s.net {
            Net::Host => ("host".to_owned(), None, None),
            Net::Bridge { network, publish } => match publish {
                Some((ip, host_port, port)) => (
                    network.clone(),
                    Some(HashMap::from([(
                        format!("{port}/tcp"),
                        Some(vec![PortBinding {
                            host_ip: Some(ip.clone()),
                            host_port: Some(host_port.to_string()),
                        }]),
                    )])),
                    Some(vec![format!("{port}/tcp")]),
                ),
                None => (network.clone(), None, None),
            },
        };
        let host = HostConfig {
            network_mode: Some(network_mode),
            port_bindings,
            mounts: Some(mounts),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,nosuid,nodev,size=64m".to_owned(),
            )])),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(s.memory_bytes),
            memory_swap: Some(s.memory_bytes),
            nano_cpus: Some(s.nano_cpus),
            pids_limit: Some(s.pids),
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(if s.restart {
                    RestartPolicyNameEnum::UNLESS_STOPPED
                } else {
                    RestartPolicyNameEnum::NO
                }),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(s.image.clone()),
            cmd: Some(s.cmd.clone()),
            env: Some(s.env.clone()),
            user: Some(s.user.clone()),
            working_dir: Some(s.workdir.clone()),
            labels: Some(s.labels.clone()),
            exposed_ports: exposed,
            healthcheck: s.healthcheck.as_ref().map(|t| HealthConfig {
                test: Some(t.clone()),
                interval: Some(1_000_000_000),
                timeout: Some(3_000_000_000),
                retries: Some(3),
                start_period: Some(0),
                start_interval: None,
            }),
            stop_timeout: Some(10),
            host_config: Some(host),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&s.name)
            .build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(DeployError::docker("create container"))?;
        if let Err(e) = self.docker.start_container(&s.name, None).await {
            let _ = self.remove(&s.name).await;
            return Err(DeployError::docker("start container")(e));
        }
        Ok(())
    }

    /// Keep a container that proved healthy running across engine restarts.
    pub async fn keep_running(&self, name: &str) -> Result<(), DeployError> {
        let body = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker
            .update_container(name, body)
            .await
            .map_err(DeployError::docker("update container"))
    }

    /// The container's state, `None` when it does not exist.
    pub async fn state(&self, name: &str) -> Result<Option<State>, DeployError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => {
                let st = c.state.unwrap_or_default();
                Ok(Some(State {
                    running: st.running.unwrap_or(false),
                    exit_code: st.exit_code,
                    oom_killed: st.oom_killed.unwrap_or(false),
                    health: match st.health.and_then(|h| h.status) {
                        Some(HealthStatusEnum::HEALTHY) => "healthy",
                        Some(HealthStatusEnum::UNHEALTHY) => "unhealthy",
                        Some(HealthStatusEnum::STARTING) => "starting",
                        _ => "none",
                    }
                    .to_owned(),
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(DeployError::docker("inspect container")(e)),
        }
    }

    /// The last `n` lines of the container's output.
    pub async fn logs_tail(&self, name: &str, n: usize) -> String {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&n.to_string())
            .build();
        let mut s = self.docker.logs(name, Some(opts));
        let mut out = String::new();
        while let Some(Ok(chunk)) = s.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if out.len() > 64 << 10 {
                break;
            }
        }
        out
    }

    /// Stop (SIGTERM, then SIGKILL after `grace`) and remove; a missing container is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DeployError> {
        let stop = StopContainerOptionsBuilder::default().t(5).build();
        let _ = self.docker.stop_container(name, Some(stop)).await;
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DeployError::docker("remove container")(e)),
        }
    }

    /// Names (without `/`) of the containers labelled [`LABEL`]=`project`.
    pub async fn containers_of(&self, project: &str) -> Result<Vec<String>, DeployError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL}={project}")])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(DeployError::docker("list containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| c.names?.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect())
    }
}

pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
