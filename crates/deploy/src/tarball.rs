//! A minimal ustar writer for Docker build contexts (regular files and directories only;
//! symlinks and special files are left out and reported).

use std::path::Path;

/// The build context: `files` (relative path, mode, content) plus extra in-memory entries.
pub struct Tar {
    buf: Vec<u8>,
}

impl Default for Tar {
    fn default() -> Self {
        Tar::new()
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    let bytes = s.as_bytes();
    let last = field.len() - 1;
    let start = bytes.len().saturating_sub(last);
    field[..last].copy_from_slice(&bytes[start..]);
    field[last] = 0;
}

impl Tar {
    pub fn new() -> Tar {
        Tar { buf: vec![] }
    }

    fn header(&mut self, path: &str, mode: u32, size: u64, kind: u8) -> Result<(), String> {
        let mut h = [0u8; 512];
        let (prefix, name) = if path.len() <= 100 {
            ("", path)
        } else {
            let cut = path[..path.len().min(156)]
                .rfind('/')
                .filter(|&i| path.len() - i - 1 <= 100 && i <= 155)
                .ok_or_else(|| format!("path too long for the build context: {path}"))?;
            (&path[..cut], &path[cut + 1..])
        };
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 0);
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        self.buf.extend_from_slice(&h);
        Ok(())
    }

    pub fn add_file(&mut self, path: &str, mode: u32, content: &[u8]) -> Result<(), String> {
        self.header(path, mode, content.len() as u64, b'0')?;
        self.buf.extend_from_slice(content);
        let pad = (512 - content.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        Ok(())
    }

    pub fn add_dir(&mut self, path: &str) -> Result<(), String> {
        self.header(&format!("{}/", path.trim_end_matches('/')), 0o755, 0, b'5')
    }

    /// Every regular file and directory under `root`, below `under` in the archive. Returns
    /// the relative paths that were left out (symlinks, special files).
    pub fn add_tree(&mut self, root: &Path, under: &str) -> Result<Vec<String>, String> {
        let mut skipped = vec![];
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .flatten()
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let p = e.path();
                let rel = p
                    .strip_prefix(root)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .replace('\\', "/");
                let name = format!("{under}/{rel}");
                let meta = std::fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
                if meta.is_dir() {
                    self.add_dir(&name)?;
                    stack.push(p);
                } else if meta.is_file() {
                    use std::os::unix::fs::PermissionsExt;
                    let content = std::fs::read(&p)
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                    // World-readable, so the app's non-root user can read what root owns.
                    let mode = (meta.permissions().mode() | 0o444) & 0o755;
                    self.add_file(&name, mode, &content)?;
                } else {
                    skipped.push(rel);
                }
            }
        }
        Ok(skipped)
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_round_trip_through_the_system_tar() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("src/deep")).unwrap();
        std::fs::write(d.path().join("src/deep/a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let mut t = Tar::new();
        t.add_file("Dockerfile", 0o644, b"FROM x\n").unwrap();
        let skipped = t.add_tree(d.path(), "app").unwrap();
        assert_eq!(skipped, ["link"]);
        let long = format!("{}/f.txt", "d".repeat(120));
        t.add_file(&long, 0o644, b"x").unwrap();
        let bytes = t.finish();
        let out = tempfile::tempdir().unwrap();
        let tarfile = out.path().join("c.tar");
        std::fs::write(&tarfile, bytes).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&tarfile)
            .arg("-C")
            .arg(out.path())
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read_to_string(out.path().join("app/src/deep/a.txt")).unwrap(),
            "hello"
        );
        assert!(out.path().join(&long).exists());
        assert!(!out.path().join("app/link").exists());
    }
}
