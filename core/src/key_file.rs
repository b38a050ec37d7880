//! Private key files (the signing key, the secrets key): readable by their owner only, and never
//! seen half-written. A file is written whole to a temporary file beside it, synced, then put in
//! place in one step, so replicas starting at the same time agree on one key and none reads an
//! empty or partial file.

use std::{io::Write, path::Path};

use rand::RngCore;

use crate::error::CoreResult;

/// Write `contents` to a new temporary file beside `path` (mode 0600), synced.
fn staged(path: &Path, contents: &str, what: &str) -> CoreResult<std::path::PathBuf> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", parent.display()))?;
    }
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".to_string());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    });
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!("cannot write the {what} {}: {err}", path.display()).into());
    }
    Ok(tmp)
}

/// Create the key file `path` holding `contents`, unless it exists. Returns whether this call
/// created it (`false`: it was there, or another process put its own there first; read it).
pub fn create_private(path: &Path, contents: &str, what: &str) -> CoreResult<bool> {
    let tmp = staged(path, contents, what)?;
    // A hard link to a new name fails if the name exists: an atomic "create if absent" of the
    // whole file.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => {
            Err(anyhow::anyhow!("cannot create the {what} {}: {err}", path.display()).into())
        }
    }
}

/// Replace the key file `path` with `contents` in one step (a rotation).
pub fn replace_private(path: &Path, contents: &str, what: &str) -> CoreResult<()> {
    let tmp = staged(path, contents, what)?;
    std::fs::rename(&tmp, path).map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!(
            "cannot put the new {what} in place at {}: {err}",
            path.display()
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_once_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("k.key");
        assert!(create_private(&path, "first\n", "test key").unwrap());
        assert!(!create_private(&path, "second\n", "test key").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        replace_private(&path, "third\n", "test key").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
        // Nothing staged is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn processes_starting_together_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let created: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let path = path.clone();
                    scope.spawn(move || create_private(&path, &format!("key {i}\n"), "test key"))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("key "));
    }
}
