//! Where a stage finds the project a message names ([`ProjectRef`]): a local path, a stored
//! iteration of the workspace, or a snapshot in the JetStream object store.
//!
//! A snapshot is one MessagePack document ([`Snapshot`]): regular files with their bytes and
//! executable bit, and symlinks whose target stays inside the tree. Nothing else can be in
//! one, so unpacking cannot write outside its directory, follow a link, or make a device.
//! Workers fetch a snapshot once, check its size and SHA-256, and keep it unpacked under their
//! cache directory by digest, so every stage of a worker process reuses one copy.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::jetstream::{self, object_store};
use proto::messages::ProjectRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use vocab::tree::is_safe_relative;

/// Format version written into every snapshot.
const SNAPSHOT_VERSION: u32 = 1;

/// Directories never put into a snapshot (`vocab::tree::is_not_project_dir`): version
/// control, coval's own workspace, installed dependencies; a snapshot naming one is refused.
use vocab::tree::NOT_PROJECT_DIRS as SKIPPED_DIRS;

#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Entry {
    File {
        path: String,
        executable: bool,
        #[serde(with = "proto::messages::serde_bytes_compat")]
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot read the project at {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "the project is larger than {limit} bytes (without .git): repair a smaller tree, or raise bus.snapshot_max_bytes"
    )]
    TooLarge { limit: u64 },
    #[error("the snapshot is not usable: {0}")]
    Invalid(String),
    #[error("the snapshot {key} does not match its digest or size: expected {expected}, got {got}")]
    Mismatch {
        key: String,
        expected: String,
        got: String,
    },
    #[error("the object store is not reachable: {0}")]
    Unreachable(String),
    #[error("snapshot {key} is not in bucket {bucket} (expired or deleted?)")]
    Missing { bucket: String, key: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot unpack the snapshot into {path}: {source}")]
    Write { path: String, source: io::Error },
}

impl ProjectError {
    /// Worth another delivery later (the store may come back); everything else is final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProjectError::Unreachable(_) | ProjectError::Write { .. }
        )
    }
}

/// Packs `root` into a snapshot, refusing trees over `limit` bytes of file contents.
pub fn pack(root: &Path, limit: u64) -> Result<Vec<u8>, ProjectError> {
    pack_outside(root, limit, None)
}

/// [`pack`], leaving out the directory `workspace` when it lies inside `root` (a workspace
/// of another name than `.coval` inside the project).
pub fn pack_outside(
    root: &Path,
    limit: u64,
    workspace: Option<&Path>,
) -> Result<Vec<u8>, ProjectError> {
    let root = root.canonicalize().map_err(|e| ProjectError::Read {
        path: root.display().to_string(),
        source: e,
    })?;
    let except = workspace
        .and_then(|w| w.canonicalize().ok())
        .filter(|w| w.starts_with(&root) && *w != root);
    let mut entries = vec![];
    let mut total = 0u64;
    walk(
        &root,
        &root,
        except.as_deref(),
        &mut entries,
        &mut total,
        limit,
    )?;
    entries.sort_by(|a, b| entry_path(a).cmp(entry_path(b)));
    rmp_serde::to_vec_named(&Snapshot {
        version: SNAPSHOT_VERSION,
        entries,
    })
    .map_err(|e| ProjectError::Invalid(e.to_string()))
}

fn entry_path(e: &Entry) -> &str {
    match e {
        Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    except: Option<&Path>,
    out: &mut Vec<Entry>,
    total: &mut u64,
    limit: u64,
) -> Result<(), ProjectError> {
    let read = |p: &Path, e: io::Error| ProjectError::Read {
        path: p.display().to_string(),
        source: e,
    };
    for entry in std::fs::read_dir(dir).map_err(|e| read(dir, e))? {
        let entry = entry.map_err(|e| read(dir, e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| read(&path, e))?;
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "skipping a path that is not UTF-8");
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if vocab::tree::is_not_project_dir(dir, &entry.file_name().to_string_lossy())
                || except == Some(path.as_path())
            {
                continue;
            }
            walk(root, &path, except, out, total, limit)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| read(&path, e))?;
            match target.to_str() {
                Some(t) if link_stays_inside(&rel, t) => out.push(Entry::Symlink {
                    path: rel,
                    target: t.to_owned(),
                }),
                _ => {
                    tracing::warn!(path = %rel, "skipping a symlink that leaves the project or loops back into it")
                }
            }
        } else if ft.is_file() {
            *total += meta.len();
            if *total > limit {
                return Err(ProjectError::TooLarge { limit });
            }
            let data = std::fs::read(&path).map_err(|e| read(&path, e))?;
            out.push(Entry::File {
                path: rel,
                executable: meta.permissions().mode() & 0o100 != 0,
                data,
            });
        }
    }
    Ok(())
}

/// A relative link target that, resolved from the link's directory, stays in the tree and
/// does not loop back to a directory the link lies in (`vocab::tree::link_is_safe`); a
/// snapshot cannot express absolute links.
fn link_stays_inside(link: &str, target: &str) -> bool {
    !target.is_empty()
        && !target.contains('\0')
        && !Path::new(target).is_absolute()
        && vocab::tree::link_is_safe(Path::new(""), Path::new(link), Path::new(target))
}

/// Decodes and checks a snapshot without writing anything.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, ProjectError> {
    let s: Snapshot =
        rmp_serde::from_slice(bytes).map_err(|e| ProjectError::Invalid(e.to_string()))?;
    if s.version != SNAPSHOT_VERSION {
        return Err(ProjectError::Invalid(format!(
            "format version {} (this build reads {SNAPSHOT_VERSION})",
            s.version
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for e in &s.entries {
        let p = entry_path(e);
        if !is_safe_relative(p) || p.split('/').any(|c| SKIPPED_DIRS.contains(&c)) {
            return Err(ProjectError::Invalid(format!("unsafe path `{p}`")));
        }
        if !seen.insert(p) {
            return Err(ProjectError::Invalid(format!("`{p}` appears twice")));
        }
        if let Entry::Symlink { path, target } = e
            && !link_stays_inside(path, target)
        {
            return Err(ProjectError::Invalid(format!(
                "symlink `{path}` points outside the project"
            )));
        }
    }
    // A file and a directory of the same name cannot both exist.
    for e in &s.entries {
        let mut prefix = String::new();
        for part in entry_path(e).split('/') {
            if !prefix.is_empty() && seen.contains(prefix.as_str()) {
                return Err(ProjectError::Invalid(format!(
                    "`{prefix}` is both a file and a directory"
                )));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
        }
    }
    Ok(s)
}

/// Writes a checked snapshot into `dst` (which must not exist): staged next to it, renamed
/// into place at the end, so a crash never leaves half a tree under the final name.
pub fn unpack(bytes: &[u8], dst: &Path) -> Result<(), ProjectError> {
    let snapshot = decode(bytes)?;
    let write = |p: &Path, e: io::Error| ProjectError::Write {
        path: p.display().to_string(),
        source: e,
    };
    // A scratch dir beside `dst`: removed on every path, and swept after a kill.
    let parent = dst.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| write(parent, e))?;
    let scratch = vocab::scratch::ScratchDir::new_in(parent, vocab::workspace::STAGE_PREFIX)
        .map_err(|e| write(parent, e))?;
    let staging = scratch.path().join("tree");
    std::fs::create_dir(&staging).map_err(|e| write(&staging, e))?;
    for e in &snapshot.entries {
        let to = staging.join(entry_path(e));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| write(parent, e))?;
        }
        match e {
            Entry::File {
                executable, data, ..
            } => {
                std::fs::write(&to, data).map_err(|e| write(&to, e))?;
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| write(&to, e))?;
            }
            Entry::Symlink { target, .. } => {
                std::os::unix::fs::symlink(target, &to).map_err(|e| write(&to, e))?;
            }
        }
    }
    match scratch.persist_inner("tree", dst) {
        Ok(()) => Ok(()),
        // Another stage of this process unpacked the same digest first: theirs is as good.
        Err(_) if dst.is_dir() => Ok(()),
        Err(e) => Err(write(dst, e)),
    }
}

/// The contents of every regular file of a snapshot, by path (for `--apply`'s comparison).
pub fn files(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ProjectError> {
    Ok(decode(bytes)?
        .entries
        .into_iter()
        .filter_map(|e| match e {
            Entry::File { path, data, .. } => Some((path, data)),
            Entry::Symlink { .. } => None,
        })
        .collect())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A bucket of the JetStream object store (snapshots, reports).
#[derive(Clone)]
pub struct Bucket {
    name: String,
    store: object_store::ObjectStore,
}

impl Bucket {
    /// Opens `name`, creating it (one replica) when missing.
    pub async fn open(js: &jetstream::Context, name: &str) -> Result<Bucket, ProjectError> {
        Bucket::open_replicated(js, name, 1).await
    }

    /// Opens `name`, creating it with `replicas` copies when missing (`bus.replicas`).
    pub async fn open_replicated(
        js: &jetstream::Context,
        name: &str,
        replicas: usize,
    ) -> Result<Bucket, ProjectError> {
        let store = match js.get_object_store(name).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: name.to_owned(),
                    description: Some("coval project snapshots and reports".into()),
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| ProjectError::Unreachable(format!("bucket {name}: {e}")))?,
        };
        Ok(Bucket {
            name: name.to_owned(),
            store,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ProjectError> {
        let mut reader = bytes;
        self.store
            .put(key, &mut reader)
            .await
            .map(|_| ())
            .map_err(|e| ProjectError::Unreachable(format!("storing {key}: {e}")))
    }

    /// The object `key`, at most `limit` bytes.
    pub async fn get(&self, key: &str, limit: u64) -> Result<Vec<u8>, ProjectError> {
        let mut obj = self.store.get(key).await.map_err(|e| {
            if matches!(e.kind(), object_store::GetErrorKind::NotFound) {
                ProjectError::Missing {
                    bucket: self.name.clone(),
                    key: key.to_owned(),
                }
            } else {
                ProjectError::Unreachable(format!("reading {key}: {e}"))
            }
        })?;
        let mut out = vec![];
        (&mut obj)
            .take(limit + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| ProjectError::Unreachable(format!("reading {key}: {e}")))?;
        if out.len() as u64 > limit {
            return Err(ProjectError::TooLarge { limit });
        }
        Ok(out)
    }

    /// Stores a snapshot of `root` for `repair` and returns the reference stages resolve.
    pub async fn put_snapshot(
        &self,
        repair: &proto::RepairId,
        bytes: &[u8],
    ) -> Result<ProjectRef, ProjectError> {
        let key = format!("{repair}.snapshot");
        self.put(&key, bytes).await?;
        Ok(ProjectRef::ObjectStore {
            bucket: self.name.clone(),
            key,
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
        })
    }
}

/// Resolves a [`ProjectRef`] to a directory this process can read.
pub struct Projects {
    /// `<workspace>/iterations`, for [`ProjectRef::Iteration`].
    pub iterations_dir: Option<PathBuf>,
    /// Where fetched snapshots are unpacked, by digest.
    pub cache_dir: Option<PathBuf>,
    /// The snapshot bucket (workers on NATS).
    pub bucket: Option<Bucket>,
    pub max_bytes: u64,
    fetching: Mutex<()>,
}

pub use vocab::DEFAULT_SNAPSHOT_MAX_BYTES;

impl Projects {
    /// Local paths and stored iterations only (the embedded mode).
    pub fn local(iterations_dir: Option<PathBuf>) -> Arc<Projects> {
        Arc::new(Projects {
            iterations_dir,
            cache_dir: None,
            bucket: None,
            max_bytes: DEFAULT_SNAPSHOT_MAX_BYTES,
            fetching: Mutex::new(()),
        })
    }

    /// Also snapshots from `bucket`, unpacked under `cache_dir`.
    pub fn with_bucket(
        iterations_dir: Option<PathBuf>,
        cache_dir: PathBuf,
        bucket: Bucket,
        max_bytes: u64,
    ) -> Arc<Projects> {
        Arc::new(Projects {
            iterations_dir,
            cache_dir: Some(cache_dir),
            bucket: Some(bucket),
            max_bytes,
            fetching: Mutex::new(()),
        })
    }

    pub async fn dir(&self, project: &ProjectRef) -> Result<PathBuf, ProjectError> {
        match project {
            ProjectRef::LocalPath { path } => Ok(PathBuf::from(path)),
            ProjectRef::Iteration { id } => match &self.iterations_dir {
                Some(d) => Ok(d.join(id.to_string())),
                None => Err(ProjectError::Unsupported(format!(
                    "iteration {id} requested but this worker has no workspace"
                ))),
            },
            ProjectRef::ObjectStore {
                bucket,
                key,
                sha256,
                size,
            } => {
                let (Some(store), Some(cache)) = (&self.bucket, &self.cache_dir) else {
                    return Err(ProjectError::Unsupported(
                        "this process reads projects from local paths only (not connected to NATS)"
                            .into(),
                    ));
                };
                if store.name() != bucket {
                    return Err(ProjectError::Unsupported(format!(
                        "snapshot bucket {bucket} is not this worker's ({})",
                        store.name()
                    )));
                }
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ProjectError::Invalid(format!(
                        "`{sha256}` is not a SHA-256 digest"
                    )));
                }
                if *size > self.max_bytes {
                    return Err(ProjectError::TooLarge {
                        limit: self.max_bytes,
                    });
                }
                let dst = cache.join(sha256.to_ascii_lowercase());
                if dst.is_dir() {
                    return Ok(dst);
                }
                // One fetch at a time per process: stages of one worker often want the same.
                let _guard = self.fetching.lock().await;
                if dst.is_dir() {
                    return Ok(dst);
                }
                let bytes = store.get(key, self.max_bytes).await?;
                let got = sha256_hex(&bytes);
                if got != sha256.to_ascii_lowercase() || bytes.len() as u64 != *size {
                    return Err(ProjectError::Mismatch {
                        key: key.clone(),
                        expected: format!("{sha256} ({size} bytes)"),
                        got: format!("{got} ({} bytes)", bytes.len()),
                    });
                }
                std::fs::create_dir_all(cache).map_err(|e| ProjectError::Write {
                    path: cache.display().to_string(),
                    source: e,
                })?;
                let bytes_for_unpack = bytes;
                let dst2 = dst.clone();
                tokio::task::spawn_blocking(move || unpack(&bytes_for_unpack, &dst2))
                    .await
                    .map_err(|e| ProjectError::Invalid(format!("unpack task failed: {e}")))??;
                Ok(dst)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_round_trip_without_vcs_and_outside_links() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        std::fs::create_dir_all(src.join(".git")).unwrap();
        std::fs::write(src.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(src.join("pkg/a.py"), "x = 1\n").unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("pkg/a.py", src.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("outside")).unwrap();
        std::os::unix::fs::symlink("../../x", src.join("pkg/up")).unwrap();
        let bytes = pack(&src, 1 << 20).unwrap();
        let dst = t.path().join("dst");
        unpack(&bytes, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("pkg/a.py")).unwrap(), b"x = 1\n");
        assert!(!dst.join(".git").exists());
        assert!(std::fs::symlink_metadata(dst.join("outside")).is_err());
        assert!(std::fs::symlink_metadata(dst.join("pkg/up")).is_err());
        assert_eq!(
            std::fs::read_link(dst.join("inside")).unwrap(),
            Path::new("pkg/a.py")
        );
        let mode = std::fs::metadata(dst.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert!(matches!(
            pack(&src, 3),
            Err(ProjectError::TooLarge { limit: 3 })
        ));
    }

    #[test]
    fn hostile_snapshots_are_refused_before_anything_is_written() {
        let t = tempfile::tempdir().unwrap();
        let cases: Vec<Vec<Entry>> = vec![
            vec![Entry::File {
                path: "../escape".into(),
                executable: false,
                data: vec![],
            }],
            vec![Entry::File {
                path: "/etc/x".into(),
                executable: false,
                data: vec![],
            }],
            vec![Entry::File {
                path: ".git/hooks/pre-commit".into(),
                executable: true,
                data: vec![],
            }],
            vec![Entry::Symlink {
                path: "a".into(),
                target: "../../etc".into(),
            }],
            vec![
                Entry::Symlink {
                    path: "d".into(),
                    target: "e".into(),
                },
                Entry::File {
                    path: "d/f".into(),
                    executable: false,
                    data: vec![],
                },
            ],
            vec![
                Entry::File {
                    path: "x".into(),
                    executable: false,
                    data: vec![],
                },
                Entry::File {
                    path: "x".into(),
                    executable: false,
                    data: vec![1],
                },
            ],
        ];
        for (i, entries) in cases.into_iter().enumerate() {
            let bytes = rmp_serde::to_vec_named(&Snapshot {
                version: SNAPSHOT_VERSION,
                entries,
            })
            .unwrap();
            let dst = t.path().join(format!("d{i}"));
            assert!(unpack(&bytes, &dst).is_err(), "case {i} was accepted");
            assert!(!dst.exists());
        }
        assert!(unpack(b"\xc1garbage", &t.path().join("g")).is_err());
    }
}
